"""Persona script control (keep_script): a reply to a Chinese conversation says no token of another script, in process
(a logits mask) and upstream (vLLM's allowed_token_ids); an English question, or the control off, leaves them."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from service.answer.persona import persona_params
from service.engines import LocalEngine, OpenAICompatibleEngine, SamplingParams
from service.engines.script import foreign_token_ids, is_chinese
from service.settings import ZHEN_HUAN

from .conftest import FakeUpstream

CHINESE = [{"role": "system", "content": "你是甄嬛。"}, {"role": "user", "content": "你是谁？"}]
ENGLISH = [{"role": "system", "content": "你是甄嬛。"}, {"role": "user", "content": "Who are you, and how are you?"}]
LATIN = re.compile(r"[A-Za-z]")


def test_a_conversation_is_chinese_by_its_users_words():
    assert is_chinese(CHINESE)
    assert not is_chinese(ENGLISH)  # the Chinese system prompt does not decide for an English question
    assert not is_chinese([{"role": "user", "content": "Who is 诸葛亮?"}])
    assert is_chinese([{"role": "user", "content": "你知道iPhone吗"}])
    assert is_chinese([{"role": "system", "content": "你是甄嬛。"}, {"role": "user", "content": "？"}])


def test_foreign_tokens_are_those_with_letters_and_never_the_end_of_turn(tiny_chat_model: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_model)
    banned = set(foreign_token_ids(tokenizer))
    texts = {i: tokenizer.decode([i]) for i in range(len(tokenizer))}
    assert {i for i, t in texts.items() if LATIN.search(t) and i not in tokenizer.all_special_ids} <= banned
    assert all(LATIN.search(texts[i]) or not texts[i].isprintable() for i in banned)  # letters, control bytes
    assert tokenizer.eos_token_id not in banned
    for text in ("孔明", "，", "。", " 3"):
        assert not banned & set(tokenizer.encode(text))


@pytest.fixture(scope="module")
def latin_loving_model(tiny_chat_model: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """The tiny model made to prefer one Latin-letter token at every step: a residual dimension held at a large
    constant (in every token's embedding, written by no layer) and that token's output row reading it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_model)
    latin = next(i for i in range(len(tokenizer)) if len(tokenizer.decode([i]).strip()) >= 4
                 and tokenizer.decode([i]).strip().isascii() and tokenizer.decode([i]).strip().isalpha())
    model = AutoModelForCausalLM.from_pretrained(tiny_chat_model)
    with torch.no_grad():
        model.model.embed_tokens.weight[:, 0] = 50.0
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight[0].zero_()
            layer.mlp.down_proj.weight[0].zero_()
        model.lm_head.weight[latin, 0] = 10.0
    out = tmp_path_factory.mktemp("latin-loving") / "model"
    model.save_pretrained(out)
    for f in tiny_chat_model.iterdir():
        if "token" in f.name or f.suffix == ".jinja":
            shutil.copy(f, out / f.name)
    return out, latin


@pytest.mark.anyio
async def test_a_chinese_reply_never_says_the_latin_token_the_model_prefers(latin_loving_model: tuple[Path, int]):
    from transformers import AutoTokenizer

    model, latin = latin_loving_model
    word = AutoTokenizer.from_pretrained(model).decode([latin]).strip()
    engine = LocalEngine(model, name="latin")
    try:
        off = await engine.generate(CHINESE, SamplingParams(max_tokens=12, temperature=0.0))
        assert word in off.text  # the control off: the model says its token
        english = await engine.generate(ENGLISH, SamplingParams(max_tokens=12, temperature=0.0, keep_script=True))
        assert word in english.text  # an English question keeps Latin letters allowed
        for seed in range(3):
            params = persona_params(ZHEN_HUAN, SamplingParams(max_tokens=24, temperature=1.0, seed=seed, stop=[]))
            assert params.keep_script  # the persona's default
            reply = await engine.generate(CHINESE, params)
            assert reply.text and not LATIN.search(reply.text)
    finally:
        await engine.aclose()


@pytest.mark.anyio
async def test_a_chinese_reply_upstream_is_sent_the_allowed_ids(fake_upstream: FakeUpstream):
    calls: list[int] = []

    def script_ids() -> list[int]:
        calls.append(1)
        return [5, 6, 7]

    engine = OpenAICompatibleEngine(fake_upstream.base_url, "echo", script_ids=script_ids)
    try:
        await engine.generate(CHINESE, persona_params(ZHEN_HUAN, SamplingParams(max_tokens=20)))
        await engine.generate(CHINESE, persona_params(ZHEN_HUAN, SamplingParams(max_tokens=20)))
        await engine.generate(ENGLISH, persona_params(ZHEN_HUAN, SamplingParams(max_tokens=20)))
        await engine.generate(CHINESE, SamplingParams(max_tokens=20, keep_script=False))
    finally:
        await engine.aclose()
    first, second, english, off = fake_upstream.state.requests
    assert first["allowed_token_ids"] == second["allowed_token_ids"] == [5, 6, 7]
    assert calls == [1]  # computed once
    assert "allowed_token_ids" not in english and "allowed_token_ids" not in off


@pytest.mark.anyio
async def test_a_server_whose_vocabulary_refuses_the_ids_is_answered_without_them(fake_upstream: FakeUpstream):
    """vLLM serving a model that is not the persona's base refuses the base's ids: the reply comes without the
    control (streamed or not), and the ids are not sent again."""
    engine = OpenAICompatibleEngine(fake_upstream.base_url, "small-vocab", script_ids=lambda: [5, 6, 7, 300_000])
    try:
        done = await engine.generate(CHINESE, persona_params(ZHEN_HUAN, SamplingParams(max_tokens=20)))
        streamed = [d async for d in engine.stream(CHINESE, persona_params(ZHEN_HUAN, SamplingParams(max_tokens=20)))]
    finally:
        await engine.aclose()
    assert done.text.startswith("回声") and "".join(d.text for d in streamed).startswith("回声")
    sent = [("allowed_token_ids" in r) for r in fake_upstream.state.requests]
    assert sent == [True, False, False]
