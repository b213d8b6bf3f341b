"""A run directory on disk: atomic writes, metrics.jsonl, checkpoints written whole or not at all."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from finetune.data.jsonfile import lines
from ingest.fsio import is_disk_error, write_text_atomic

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "train_summary.json"
CHECKPOINTS = "checkpoints"
_STEP_DIR = re.compile(r"^step-(\d+)$")
# What a writer killed mid-way leaves: ".NAME.XXXXXXXX.part" (ingest.fsio's files), ".NAME.XXXXXXXX" (temporary
# folders, and files of earlier versions), ".NAME.old", ".final"
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<suffix>old|[a-z0-9_]{8}(\.part)?)$")
_FINAL = ".final"


class RunError(RuntimeError):
    """Training, evaluation or merging cannot go on; the message names the file or key and the fix."""


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """Turn a failed write under `path` (read-only folder, full disk) into a RunError that names it."""
    try:
        yield
    except RunError:
        raise
    except Exception as exc:
        # torch.save reports a full disk as a bare RuntimeError ("file write failed"), safetensors as its own
        # SafetensorError: under a write, count them as disk faults like the OSErrors that say so
        serializer = isinstance(exc, RuntimeError) or type(exc).__name__ == "SafetensorError"
        if not (serializer or isinstance(exc, OSError)):
            raise
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        where = getattr(exc, "filename", None) or path
        fix = "free some space or make the folder writable, or set" if serializer or is_disk_error(exc) else "set"
        raise RunError(
            f"cannot write {where}: {reason}: {fix} output_dir= to another folder; "
            "`finetune train` resumes from the last complete checkpoint"
        ) from exc


def tidy(run_dir: Path) -> list[str]:
    """Clear what a killed writer left behind: temporary files and folders (never seen under a real name),
    and put back a checkpoint that was being replaced. Returns the names removed."""
    removed = []
    for folder in (run_dir, run_dir / CHECKPOINTS):
        for p in sorted(folder.iterdir()) if folder.is_dir() else []:
            m = _TEMP.match(p.name)
            if not m and p.name != _FINAL:
                continue
            real = folder / m.group("name") if m else p
            if m and m.group("suffix") == "old" and not real.exists() and (p / "state.json").is_file():
                p.rename(real)
                log.warning("restored %s, which was being replaced when the last run stopped", real)
                continue
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p.name)
    if removed:
        log.warning("removed %d temporary files of an interrupted run in %s", len(removed), run_dir)
    return removed


def write_text(path: Path, text: str) -> None:
    """Write through a temporary file and rename, so readers see the old file or the new one, never half."""
    with writing(path):
        write_text_atomic(path, text)


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, ensure_ascii=False, indent=2) + "\n")


def append_metric(run_dir: Path, record: dict[str, Any]) -> None:
    """One JSON line, written with a single write call; a line cut by a crash is dropped on resume."""
    line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
    with writing(run_dir / METRICS_FILE):
        fd = os.open(run_dir / METRICS_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if os.write(fd, line) != len(line):
                raise OSError(28, "No space left on device (a short write)", str(run_dir / METRICS_FILE))
        finally:
            os.close(fd)


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    records = []
    for line in lines(path.read_text(encoding="utf-8")):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by a kill
    return records


def truncate_metrics(run_dir: Path, step: int) -> None:
    """Keep only the records up to `step` (what the checkpoint being resumed from had seen)."""
    kept = [r for r in read_metrics(run_dir) if r.get("step", 0) <= step]
    write_text(run_dir / METRICS_FILE, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept))


def checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints, oldest first (a checkpoint is renamed into place only once fully written)."""
    root = run_dir / CHECKPOINTS
    found = []
    for p in root.iterdir() if root.is_dir() else []:
        m = _STEP_DIR.match(p.name)
        if m and (p / "state.json").is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def write_dir(target: Path, fill: Callable[[Path], None]) -> Path:
    """Have `fill` write into a fresh temporary folder beside `target`, then rename it to `target`."""
    with writing(target):
        return _write_dir(target, fill)


def _write_dir(target: Path, fill: Callable[[Path], None]) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        fill(tmp)
        for f in tmp.rglob("*"):  # some writers (safetensors) create files private; runs are shared like data
            f.chmod(0o755 if f.is_dir() else 0o644)
        tmp.chmod(0o755)
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def save_checkpoint(run_dir: Path, step: int, fill: Callable[[Path], None], keep: int) -> Path:
    path = write_dir(run_dir / CHECKPOINTS / f"step-{step:06d}", fill)
    for _, old in checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return path


def move_files_into(src: Path, dst: Path, last: str | None = None) -> None:
    """Rename every file of `src` into `dst` (each rename atomic), `last` after the others."""
    files = sorted(src.iterdir(), key=lambda p: p.name == last)
    for f in files:
        if f.is_file():
            os.replace(f, dst / f.name)


def clear_run(run_dir: Path) -> None:
    """Forget earlier training in `run_dir` (the `--restart` flag): checkpoints, metrics and the summary."""
    shutil.rmtree(run_dir / CHECKPOINTS, ignore_errors=True)
    for name in (METRICS_FILE, SUMMARY_FILE):
        (run_dir / name).unlink(missing_ok=True)
