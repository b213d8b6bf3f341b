"""De-duplication, the seeded train/validation split and mixing in other data at a ratio."""

from __future__ import annotations

import pytest

from finetune.data.dataset import dedupe, mix, split
from finetune.data.formats import Conversation


def _convs(n: int, tag: str = "p") -> list[Conversation]:
    return [Conversation.pair(f"{tag}问{i}", f"{tag}答{i}", n=i) for i in range(n)]


def test_dedupe_ignores_whitespace_and_meta_and_keeps_the_first():
    a = Conversation.pair("先生 何往？", "往江东。", source="a")
    b = Conversation.pair("先生何往？", "往江东。", source="b")
    c = Conversation.pair("先生  何往？", "往江东。", source="c")
    d = Conversation.pair("先生何往？", "往江东。", system="你是孔明。")
    kept, dropped = dedupe([a, c, d, b])
    assert dropped == 1
    assert [k.meta.get("source") for k in kept] == ["a", None, "b"]


def test_split_is_seeded_disjoint_and_complete():
    convs = _convs(100)
    train, val = split(convs, 0.1, seed=42)
    assert len(val) == 10 and len(train) == 90
    ids = [c.meta["n"] for c in train + val]
    assert sorted(ids) == list(range(100))
    _, again_val = split(convs, 0.1, seed=42)
    assert [c.meta["n"] for c in again_val] == [c.meta["n"] for c in val]
    _, other_val = split(convs, 0.1, seed=7)
    assert [c.meta["n"] for c in other_val] != [c.meta["n"] for c in val]


def test_split_edge_cases():
    assert split(_convs(3), 0.01, seed=0)[1] != []  # a small set still gets one validation example
    assert len(split(_convs(2), 0.9, seed=0)[0]) == 1  # and keeps at least one for training
    assert split(_convs(5), 0.0, seed=0) == (_convs(5), [])
    with pytest.raises(ValueError):
        split(_convs(5), 1.0)


def test_mix_reaches_the_ratio_and_tags_the_source():
    persona, extra = _convs(80), _convs(500, "x")
    out = mix(persona, extra, ratio=0.2, seed=1)
    assert len(out) == 100
    assert sum(c.meta["mix"] == "extra" for c in out) == 20
    assert {c.meta["n"] for c in out if c.meta["mix"] == "persona"} == set(range(80))
    assert [c.messages for c in mix(persona, extra, 0.2, seed=1)] == [c.messages for c in out]
    assert "mix" not in persona[0].meta  # inputs are not changed


def test_mix_uses_all_extra_when_there_is_too_little():
    out = mix(_convs(80), _convs(5, "x"), ratio=0.5, seed=0)
    assert len(out) == 85
    assert all(c.meta["mix"] == "persona" for c in mix(_convs(10), _convs(5, "x"), ratio=0.0))
