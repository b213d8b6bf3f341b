"""From a config to batches: load and split conversations, tokenize with assistant-only labels, pack or group."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from finetune.data.formats import Conversation, DataError, Format
from finetune.training.config import Config
from finetune.training.paths import WHERE

log = logging.getLogger(__name__)
IGNORE = -100


@dataclass
class Example:
    ids: list[int]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.ids)


def _read(path: str, fmt: str, key: str) -> list[Conversation]:
    from finetune.data.formats import read

    if not Path(path).is_file():
        raise DataError(f"{path}: no such file ({key}; {WHERE}, data/... from $KONGMING_DATA_DIR): correct the path, "
                        "or build the file with `finetune data extract` / `finetune data split`")
    convs, problems = read(path, None if fmt == "auto" else cast("Format", fmt))
    if problems:
        log.warning("%s: skipped %d invalid records (run `finetune data validate %s`)", path, len(problems), path)
    if not convs:
        raise DataError(f"{path}: no valid conversations ({key})")
    return convs


def load_conversations(cfg: Config) -> tuple[list[Conversation], list[Conversation]]:
    """(train, validation) conversations as the config describes them; the same config always gives the same split."""
    from finetune.data.dataset import dedupe, mix, split

    d = cfg.data
    if cfg.task == "classify":
        from finetune.evaluation.classify import load_split, to_conversation

        rows_train, rows_val = load_split(d)
        train = [to_conversation(r, d) for r in rows_train]
        val = [to_conversation(r, d) for r in rows_val]
    else:
        train = _read(d.train, d.format, "data.train")
        if d.dedupe:
            train, _ = dedupe(train)
        if d.val:
            val = _read(d.val, d.format, "data.val")
        else:
            train, val = split(train, d.val_split, d.split_seed)
    if d.mix_path and d.mix_ratio > 0:
        train = mix(train, _read(d.mix_path, "auto", "data.mix_path"), d.mix_ratio, d.split_seed)
    if d.max_examples:
        train = train[: d.max_examples]
    return train, val


def messages_of(conv: Conversation, system: str | None = None) -> list[dict[str, str]]:
    sys_prompt = conv.system or system
    head = [{"role": "system", "content": sys_prompt}] if sys_prompt else []
    return head + [{"role": m["role"], "content": m["content"]} for m in conv.messages]


def tokenize(tokenizer: Any, convs: list[Conversation], max_len: int, system: str | None = None) -> list[Example]:
    """Examples cut to `max_len`; one left with no assistant token after the cut is dropped (and counted)."""
    from finetune.models.template import encode_chat_labels

    out: list[Example] = []
    cut = dropped = 0
    for conv in convs:
        ids, labels = encode_chat_labels(tokenizer, messages_of(conv, system), IGNORE)
        if len(ids) > max_len:
            cut += 1
            ids, labels = ids[:max_len], labels[:max_len]
        if all(x == IGNORE for x in labels[1:]):
            dropped += 1
            continue
        out.append(Example(ids, labels))
    if cut or dropped:
        log.warning(
            "%d of %d examples longer than max_seq_len=%d were cut, %d dropped (no answer left)",
            cut,
            len(convs),
            max_len,
            dropped,
        )
    return out


def pack(examples: list[Example], max_len: int) -> list[list[Example]]:
    """First-fit-decreasing bins of at most `max_len` tokens: rows nearly full, so little compute goes to padding."""
    rows: list[list[Example]] = []
    room: list[int] = []
    for ex in sorted(examples, key=len, reverse=True):
        for i, free in enumerate(room):
            if len(ex) <= free:
                rows[i].append(ex)
                room[i] -= len(ex)
                break
        else:
            rows.append([ex])
            room.append(max_len - len(ex))
    return rows


def epoch_batches(
    rows: list[list[Example]], batch_size: int, mode: str, seed: int, epoch: int
) -> list[list[list[Example]]]:
    """The micro-batches of one epoch, a pure function of (seed, epoch) so a resumed run sees the same order.

    `rows` are packed rows (mode packing) or one example each; mode length sorts within windows of 64 batches
    so that a batch holds similar lengths (less padding) while the order stays random.
    """
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(rows)
    rng.shuffle(order)
    if mode == "length":
        window = batch_size * 64
        order = [r for i in range(0, len(order), window) for r in sorted(order[i : i + window], key=_row_len)]
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if mode == "length":
        rng.shuffle(batches)
    return batches


def _row_len(row: list[Example]) -> int:
    return sum(len(e) for e in row)


def collate(batch: list[list[Example]], pad_id: int, packed: bool) -> dict[str, Any]:
    """Tensors for one micro-batch. Packed rows restart position_ids at each example and pass no attention mask,
    which transformers turns into a block-diagonal causal mask (examples never see each other)."""
    import torch

    width = max(_row_len(r) for r in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    pos = torch.zeros((len(batch), width), dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for b, row in enumerate(batch):
        at = 0
        for ex in row:
            n = len(ex)
            ids[b, at : at + n] = torch.tensor(ex.ids)
            labels[b, at : at + n] = torch.tensor(ex.labels)
            pos[b, at : at + n] = torch.arange(n)
            at += n
        mask[b, :at] = 1
        pos[b, at:] = torch.arange(width - at)  # padding is its own segment, with no labels
    tokens = int(mask.sum())
    if packed:
        return {"input_ids": ids, "labels": labels, "position_ids": pos, "attention_mask": None, "tokens": tokens}
    return {"input_ids": ids, "labels": labels, "position_ids": None, "attention_mask": mask, "tokens": tokens}
