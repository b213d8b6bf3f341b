"""Where a config's files are: data paths read from the YAML's folder, runs written under the data folder."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
DATA_KEYS = ("train", "val", "mix_path")  # the data section's file paths
WHERE = "a relative path in a config is read from the config's folder, then from the current folder"


def data_dir() -> Path:
    """The data folder every output goes under: $KONGMING_DATA_DIR, else data/ (relative to the current folder)."""
    return Path(os.environ.get("KONGMING_DATA_DIR") or "data")


def in_data_dir(value: str) -> Path:
    """`data/runs/x` or `runs/x` as a path under the data folder (`$KONGMING_DATA_DIR/runs/x`); absolute as is."""
    p = Path(value).expanduser()
    if p.is_absolute():
        return p
    rest = Path(*p.parts[1:]) if p.parts and p.parts[0] == "data" else p
    return data_dir() / rest


def resolve_data_path(value: str, config_dir: Path, key: str) -> str:
    """A data file named in a YAML config: beside the config when it is there; else relative to the current folder
    when it is there (with a warning that says so); else under the data folder for `data/...` (files the data
    commands build); else beside the config, which the error on reading names."""
    p = Path(value).expanduser()
    if p.is_absolute():
        return str(p)
    beside = Path(os.path.abspath(config_dir / p))
    if beside.exists():
        return str(beside)
    here = Path(os.path.abspath(p))
    if here.exists():
        log.warning("%s=%s: not found beside the config (%s); using %s, relative to the current folder", key, value,
                    beside, here)  # fmt: skip
        return str(here)
    if p.parts[0] == "data":
        return os.path.abspath(in_data_dir(value))
    return str(beside)


def resolve_paths(data: dict[str, Any], config_dir: Path) -> None:
    """Rewrite the data section's relative file paths of a raw YAML mapping in place (see resolve_data_path)."""
    section = data.get("data")
    if not isinstance(section, dict):
        return
    for key in DATA_KEYS:
        value = section.get(key)
        if isinstance(value, str) and value.strip() and value.strip().lower() not in ("null", "none", "~"):
            section[key] = resolve_data_path(value.strip(), config_dir, f"data.{key}")


def absolute_paths(section: Any) -> None:
    """The data section's paths still relative (an override's, typed in a shell) made absolute from the current
    folder, so that the run's resolved config.yaml names the same files wherever it is read from."""
    for key in DATA_KEYS:
        value = getattr(section, key)
        if value and not Path(value).expanduser().is_absolute():
            setattr(section, key, os.path.abspath(Path(value).expanduser()))
