"""A folder written by `finetune merge` is what vLLM (the CPU build) loads and serves: the tuned weights, unchanged."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from finetune.models.merge import merge_run
from finetune.training.config import load_config
from finetune.training.train import train
from tests.service.conftest import running_vllm
from tests.tinymodel import build_tiny_model

from .conftest import PAIRS, tiny_overrides, write_pairs

pytestmark = pytest.mark.integration


def test_vllm_serves_a_merged_model(tmp_path: Path) -> None:
    from openai import OpenAI

    from service.engines import LocalEngine, SamplingParams

    base = build_tiny_model(tmp_path / "base")  # head_dim 64: a shape vLLM's CPU attention supports
    data = write_pairs(tmp_path / "pairs.jsonl")
    run = tmp_path / "run"
    train(load_config(None, tiny_overrides(base, data, run, "train.max_steps=8", "train.max_seq_len=64")))
    merged = merge_run(run, tmp_path / "merged")

    prompts = [[{"role": "user", "content": q}] for q, _ in PAIRS[:4]]
    greedy = SamplingParams(max_tokens=12, temperature=0.0, seed=0)

    async def local_answers(model_dir: Path) -> list[str]:
        engine = LocalEngine(model_dir)
        return [(await engine.generate(m, greedy)).text for m in prompts]

    tuned_local = asyncio.run(local_answers(merged))
    base_local = asyncio.run(local_answers(base))
    assert tuned_local != base_local  # the training changed the model, so the comparison below means something

    with running_vllm(merged, "tiny-persona", tmp_path) as server:
        client = OpenAI(base_url=server.base_url, api_key="unused")
        assert [m.id for m in client.models.list()] == ["tiny-persona"]
        served = [
            client.chat.completions.create(
                model="tiny-persona", messages=m, max_tokens=12, temperature=0.0, seed=0  # type: ignore[arg-type]
            ).choices[0].message.content
            for m in prompts
        ]
    # vLLM renders the merged folder's chat template and runs its weights exactly as transformers does
    assert served == tuned_local
