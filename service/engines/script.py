"""Keeping a reply in its conversation's script: which vocabulary tokens a Chinese reply may not say (a small
multilingual model samples code identifiers and drug names into Chinese answers otherwise, issue 12)."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

# What a Chinese reply is written with: CJK ideographs, radicals, bopomofo, CJK and fullwidth punctuation (not the
# fullwidth letters), digits, whitespace, ASCII and general punctuation, the middle dot of transliterated names, and
# U+FFFD: a token holding part of a character's UTF-8 bytes decodes to it, and rare characters are spelled so.
_CHINESE_CHARS = (
    r"\u2e80-\u2fff\u3000-\u303f\u3100-\u312f\u31a0-\u31ef\u3200-\u4dbf\u4e00-\u9fff\uf900-\ufaff\ufe30-\ufe4f"
    r"\uff01-\uff20\uff3b-\uff40\uff5b-\uff65\uffe0-\uffee\U00020000-\U0003134f"
    r"0-9\s!-/:-@\[-`{-~\u00b7\u00d7\u2000-\u206f\ufffd"
)
_FOREIGN = re.compile(f"[^{_CHINESE_CHARS}]")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")
_LATIN_WORD = re.compile(r"[A-Za-z]+")

_lock = threading.Lock()
_masks: dict[tuple[str, int], Any] = {}


def is_chinese(messages: Sequence[dict[str, Any]]) -> bool:
    """Whether a reply to `messages` should be Chinese: the users' text (or, when they wrote no letters or
    characters, the whole conversation) holds more than two CJK characters per Latin word. "Who is 诸葛亮?" is
    English (3 characters, 2 words); "你知道iPhone吗" is Chinese."""
    def counts(texts: Iterable[str]) -> tuple[int, int]:
        joined = "\n".join(texts)
        return len(_CJK.findall(joined)), len(_LATIN_WORD.findall(joined))

    cjk, words = counts(str(m.get("content") or "") for m in messages if m.get("role") == "user")
    if cjk == 0 and words == 0:
        cjk, words = counts(str(m.get("content") or "") for m in messages)
    return cjk > 2 * words


def foreign_token_ids(tokenizer: Any) -> list[int]:
    """The ids of `tokenizer`'s tokens whose text holds a character a Chinese reply is not written with (Latin
    letters, kana, Cyrillic...); special tokens (the end of turn) are never among them."""
    special = set(tokenizer.all_special_ids)  # and added control tokens (gemma's <end_of_turn>)
    special |= {i for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items() if t.special}
    texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))], skip_special_tokens=False,
                                   clean_up_tokenization_spaces=False)
    return [i for i, t in enumerate(texts) if i not in special and _FOREIGN.search(t)]


def foreign_mask(tokenizer: Any) -> Any:
    """`foreign_token_ids` as a boolean tensor over the tokenizer's ids, computed once per tokenizer (its name and
    size) and cached: gemma-3's 262k tokens take about 3 s (BENCHMARKS.md)."""
    import torch

    key = (str(getattr(tokenizer, "name_or_path", "")) or str(id(tokenizer)), len(tokenizer))
    with _lock:
        mask = _masks.get(key)
        if mask is None:
            mask = torch.zeros(len(tokenizer), dtype=torch.bool)
            mask[torch.tensor(foreign_token_ids(tokenizer), dtype=torch.long)] = True
            _masks[key] = mask
        return mask


class BannedTokens:
    """A logits processor: the scores of the tokens `mask` marks, and of the model's rows past the tokenizer's ids
    (padding, never real tokens), set to -inf; `keep` (the end-of-turn ids) stays allowed whatever its text. One
    masked_fill per step: cheaper than bad_words_ids' per-word checks for ~100k ids."""

    def __init__(self, mask: Any, keep: Iterable[int] = ()) -> None:
        self.mask = mask
        self.keep = list(keep)
        self._wide: Any = None

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        if self._wide is None:
            wide = torch.ones(scores.shape[-1], dtype=torch.bool)
            n = min(len(self.mask), scores.shape[-1])
            wide[:n] = self.mask[:n]
            wide[[i for i in self.keep if i < scores.shape[-1]]] = False
            self._wide = wide.to(scores.device)
        return scores.masked_fill(self._wide, float("-inf"))


def allowed_token_ids(model: str, cache_dir: str | Path | None = None) -> list[int]:
    """The ids a Chinese reply of `model` (a folder, hub id or gemma-3-270m, resolved as the in-process engine
    does) may say: its tokenizer's ids not in `foreign_mask`, for a model server's allowed_token_ids."""
    from transformers import AutoTokenizer

    from finetune.models.base import resolve_model

    mask = foreign_mask(AutoTokenizer.from_pretrained(resolve_model(model, cache_dir)))
    return [i for i, banned in enumerate(mask.tolist()) if not banned]
