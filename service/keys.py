"""API keys: a keys file holding only sha256 digests (add, list, revoke), and the key ring the API checks."""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from ingest.fsio import write_text_atomic

from .settings import ServiceSettings, hash_key

KEY_PREFIX = "km-"
log = logging.getLogger(__name__)


@dataclass
class KeyEntry:
    id: str
    name: str
    sha256: str
    created: str
    revoked: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked is None


class KeyFileError(Exception):
    """A keys file that cannot be read or written; the message names the file."""


def read_keys(path: Path) -> list[KeyEntry]:
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return [KeyEntry(**e) for e in data.get("keys", [])]
    except (OSError, ValueError, TypeError) as exc:
        raise KeyFileError(f"cannot read the keys file {path}: {exc}; fix or remove it") from exc


def write_keys(path: Path, entries: list[KeyEntry]) -> None:
    """Atomically (a reader sees the old or the new file), readable by the owner only."""
    write_text_atomic(path, json.dumps({"keys": [asdict(e) for e in entries]}, indent=2), perm=0o600)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def add_key(path: Path, name: str = "") -> tuple[str, KeyEntry]:
    """A new random key: only its digest is stored; the key itself is returned once."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    entries = read_keys(path)
    ids = {e.id for e in entries}
    key_id = "key_" + secrets.token_hex(4)
    while key_id in ids:
        key_id = "key_" + secrets.token_hex(4)
    entry = KeyEntry(id=key_id, name=name, sha256=hash_key(key), created=_now())
    write_keys(path, [*entries, entry])
    return key, entry


def revoke_key(path: Path, key_id: str) -> KeyEntry:
    entries = read_keys(path)
    entry = next((e for e in entries if e.id == key_id), None)
    if entry is None:
        known = ", ".join(e.id for e in entries) or "none"
        raise KeyFileError(f"no key {key_id!r} in {path} (keys: {known}); see `kongming keys list`")
    if entry.revoked is None:
        entry.revoked = _now()
        write_keys(path, entries)
    return entry


class KeyRing:
    """The digests the API accepts: the settings' `api_keys` plus the active entries of the keys file, which is
    re-read when it changes (a revoked key stops working on the next request, without a restart)."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.path = settings.keys_path()
        self._static = {d: "settings:" + d[:8] for d in settings.key_digests()}
        self._stamp: tuple[int, int] | None = None
        self._file: dict[str, str] = {}
        self._issued = False  # the keys file holds entries, revoked ones included

    def _refresh(self) -> None:
        try:
            st = self.path.stat()
            stamp: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp == self._stamp:
            return
        try:
            entries = read_keys(self.path) if stamp is not None else []
        except KeyFileError as exc:
            # keep the last good set rather than opening the service or locking everyone out
            log.error("%s", exc)
            return
        self._file = {e.sha256: e.id for e in entries if e.active}
        self._issued = bool(entries)
        self._stamp = stamp

    def configured(self) -> bool:
        self._refresh()
        return bool(self._static or self._file)

    def chat_needs_key(self, chat_auth: str) -> bool:
        """Whether chat (API and page alike) needs a key now: `required`, or `auto` once any key has been issued.
        Revoking every key locks chat rather than opening it: a revoked key must never answer, and with chat
        open any caller would (`chat_auth=open` opens it on purpose)."""
        if chat_auth == "auto":
            self._refresh()
            return bool(self._static) or self._issued
        return chat_auth == "required"

    def identify(self, key: str | None) -> str | None:
        """The id of a valid key (never the key itself), None when it is not accepted."""
        if key is None:
            return None
        self._refresh()
        digest = hash_key(key)
        return self._file.get(digest) or self._static.get(digest)


def keys_command(settings: ServiceSettings, action: str, name: str = "", key_id: str | None = None) -> int:
    """`kongming keys add|list|revoke`: prints the new key once; the file keeps digests only."""
    import sys

    path = settings.keys_path()
    try:
        if action == "add":
            key, entry = add_key(path, name)
            print(key)
            print(f"added {entry.id} to {path}: keep the key above, it is not stored and cannot be shown again",
                  file=sys.stderr)
        elif action == "list":
            for e in read_keys(path):
                state = f"revoked {e.revoked}" if e.revoked else "active"
                print(f"{e.id}\t{e.name or '-'}\t{e.created}\t{state}\tsha256:{e.sha256[:12]}…")
        elif action == "revoke":
            assert key_id is not None
            entry = revoke_key(path, key_id)
            print(f"revoked {entry.id} ({entry.revoked})", file=sys.stderr)
    except KeyFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
