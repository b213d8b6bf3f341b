"""Shape a dialogue set for training: de-duplicate, split train/validation with a seed, mix in other data, write."""

from __future__ import annotations

import json
import logging
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from finetune.data.formats import Conversation, Format, Problem
from ingest.fsio import write_text_atomic

log = logging.getLogger(__name__)

_SPACE = re.compile(r"\s+")


def conversation_key(conv: Conversation) -> tuple[str, ...]:
    """What makes two conversations the same example: system and turns, whitespace ignored, meta ignored."""
    parts = [_SPACE.sub(" ", conv.system or "").strip()]
    parts += [f"{m['role']}\x00{_SPACE.sub(' ', m['content']).strip()}" for m in conv.messages]
    return tuple(parts)


def dedupe(convs: Iterable[Conversation]) -> tuple[list[Conversation], int]:
    """(the first of each set of identical conversations in order, how many were dropped)."""
    seen: set[tuple[str, ...]] = set()
    kept: list[Conversation] = []
    dropped = 0
    for conv in convs:
        key = conversation_key(conv)
        if key in seen:
            dropped += 1
            continue
        seen.add(key)
        kept.append(conv)
    if dropped:
        log.info("dropped %d duplicate conversations, kept %d", dropped, len(kept))
    return kept, dropped


def split(convs: list[Conversation], val: float = 0.1, seed: int = 42) -> tuple[list[Conversation], list[Conversation]]:
    """(train, validation): a seeded shuffle, then `val` of it (at least one when val > 0 and there are two or
    more) held out. The same input, val and seed always give the same split."""
    if not 0 <= val < 1:
        raise ValueError(f"validation share must be in [0, 1), got {val}")
    order = list(range(len(convs)))
    random.Random(seed).shuffle(order)
    n_val = round(len(convs) * val)
    if val > 0 and len(convs) >= 2:
        n_val = min(max(n_val, 1), len(convs) - 1)
    held = sorted(order[:n_val])
    train = sorted(order[n_val:])
    return [convs[i] for i in train], [convs[i] for i in held]


def mix(
    persona: list[Conversation], extra: list[Conversation], ratio: float = 0.2, seed: int = 0
) -> list[Conversation]:
    """The persona set plus examples drawn from `extra` (general dialogue, RAG-grounded answers) so that they
    make up `ratio` of the result (0.2: 80/20), shuffled with `seed`; each example's meta says which it was.

    This is the augmentation hook: anything that yields Conversations can be mixed in. When `extra` is too
    small for the ratio, all of it is used and the shortfall is logged.
    """
    if not 0 <= ratio < 1:
        raise ValueError(f"mix ratio must be in [0, 1), got {ratio}")
    rng = random.Random(seed)
    wanted = round(len(persona) * ratio / (1 - ratio))
    if wanted > len(extra):
        log.warning("mix: %d extra examples wanted for ratio %.2f, only %d given; using all", wanted, ratio, len(extra))
        wanted = len(extra)
    drawn = rng.sample(extra, wanted)
    out = [replace(c, messages=list(c.messages), meta={**c.meta, "mix": "persona"}) for c in persona]
    out += [replace(c, messages=list(c.messages), meta={**c.meta, "mix": "extra"}) for c in drawn]
    rng.shuffle(out)
    return out


SPLIT_FILE = "split.json"


@dataclass
class SplitReport:
    """What `split_to_dir` wrote: its counts, the records of the mix file it skipped, and split.json's content."""

    train: int
    validation: int
    duplicates_dropped: int
    mixed: int
    mix_problems: list[Problem] = field(default_factory=list)
    record: dict[str, Any] = field(default_factory=dict)


def split_to_dir(
    convs: list[Conversation],
    source: Path,
    fmt: Format,
    out: Path,
    *,
    to: Format | None = None,
    val: float = 0.1,
    seed: int = 42,
    dedupe_first: bool = True,
    mix_path: Path | None = None,
    mix_ratio: float = 0.2,
    meta: bool = False,
    skipped: int = 0,
) -> SplitReport:
    """`finetune data split`: de-duplicate `convs` (read from `source`, in `fmt`), split them with `seed`, mix the
    records of `mix_path` into the training part, and write train, val (in `to`, default `fmt`; JSON lines for
    openai or a .jsonl source) and split.json (what was done; `skipped`: the source's invalid records) into `out`."""
    from finetune.data.formats import read_with_format, write

    if not 0 <= val < 1 or not 0 <= mix_ratio < 1:
        raise ValueError(f"validation share and mix ratio must be in [0, 1), got {val} and {mix_ratio}")
    dropped = 0
    if dedupe_first:
        convs, dropped = dedupe(convs)
    train, held = split(convs, val, seed)
    mixed, mix_problems = 0, list[Problem]()
    if mix_path:
        extra, mix_problems, _ = read_with_format(mix_path)
        before = len(train)
        train = mix(train, extra, mix_ratio, seed)
        mixed = len(train) - before
    out_fmt: Format = to or fmt
    ext = ".jsonl" if out_fmt == "openai" or source.suffix == ".jsonl" else ".json"
    write(out / f"train{ext}", train, out_fmt, meta=meta)
    write(out / f"val{ext}", held, out_fmt, meta=meta)
    record = {
        "input": str(source),
        "input_format": fmt,
        "format": out_fmt,
        "val": val,
        "seed": seed,
        "dedupe": dedupe_first,
        "duplicates_dropped": dropped,
        "skipped": skipped + len(mix_problems),
        "train": len(train),
        "validation": len(held),
        "mix": {"file": str(mix_path), "ratio": mix_ratio, "added": mixed} if mix_path else None,
    }
    write_text_atomic(out / SPLIT_FILE, json.dumps(record, ensure_ascii=False, indent=2) + "\n")
    return SplitReport(len(train), len(held), dropped, mixed, mix_problems, record)
