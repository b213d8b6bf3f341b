"""What the store keeps besides vectors: document records (states, chunk ids, names) and stored chunks."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import IngestError

COMPLETE, PENDING, DELETING = "complete", "pending", "deleting"
PREFIX, DOCS, REBUILD, STAGED, PIECES = "kb_", "__docs", "__rebuild", "__staged", "__pieces"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,60}[A-Za-z0-9]$|^[A-Za-z0-9]$")

_BODY_FIELDS = ("committed", "pending", "aliases", "entities", "kin")  # lists: kept in the record's body, as JSON
_NOT_STORED = ("embedded",)  # computed when listed, never written


@dataclass
class DocRecord:
    """What the store knows about one document (its states and their transitions: kb.py)."""

    doc_id: str
    source: str
    title: str
    doc_hash: str
    status: str = PENDING
    fmt: str = ""
    encoding: str = ""
    chars: int = 0
    updated_at: float = 0.0
    text_hash: str = ""  # of the text alone: another file with the same text is the same document
    # False while the names of the text are still to be mined (after the keyword phase; records written before
    # the two phases existed have their names)
    entities_mined: bool = True
    # the name miner that mined them (entities.MINER_VERSION; 0 before it was recorded): an older one's names are
    # mined again by the next `ingest add` or `ingest embed`
    entities_version: int = 0
    committed: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    aliases: list[list[str]] = field(default_factory=list)
    entities: list[str] = field(default_factory=list)
    # [person, relation, relative] the text states (kin.mine_kin: 曹操 父 曹嵩), mined with the names
    kin: list[list[str]] = field(default_factory=list)
    # committed chunks that have their vector (-1: not counted); filled by `list_documents`
    embedded: int = -1

    @property
    def n_chunks(self) -> int:
        return len(self.committed)

    def to_chroma(self) -> tuple[str, dict[str, Any]]:
        meta = asdict(self)
        for k in _NOT_STORED:
            meta.pop(k)
        body = json.dumps({k: meta.pop(k) for k in _BODY_FIELDS}, ensure_ascii=False)
        meta["n_chunks"] = self.n_chunks
        return body, meta

    @classmethod
    def from_chroma(cls, body: str, meta: dict[str, Any]) -> DocRecord:
        data = json.loads(body or "{}")
        skip = (*_BODY_FIELDS, *_NOT_STORED)
        fields = {k: meta[k] for k in cls.__dataclass_fields__ if k in meta and k not in skip}
        return cls(**fields, **{k: data.get(k, []) for k in _BODY_FIELDS})


@dataclass
class StoredChunk:
    chunk_id: str
    text: str
    metadata: dict[str, Any]
    score: float = 0.0


def validate_name(name: str) -> str:
    if not _NAME.match(name) or name.endswith((DOCS, REBUILD, STAGED, PIECES)):
        raise IngestError(
            f"collection name {name!r} is not allowed: use 1-62 ASCII letters, digits, '.', '_' or '-', "
            "starting and ending with a letter or digit (e.g. 'sanguo')"
        )
    return name


# Keys LlamaIndex adds for its own bookkeeping; callers get the chunk's own metadata.
_LLAMA_KEYS = {"_node_content", "_node_type", "document_id", "ref_doc_id"}


def public_meta(meta: dict[str, Any] | None) -> dict[str, Any]:
    """A stored chunk's own metadata, without what LlamaIndex's ChromaVectorStore adds to it."""
    return {k: v for k, v in (meta or {}).items() if k not in _LLAMA_KEYS}
