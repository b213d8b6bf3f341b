"""Onboarding output of the service: `kongming ask` prints the answer without the model libraries' bars and
advisory warnings (errors still show), and the page says when the first persona answer waits for a model load."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from service.settings import REPO_ROOT
from tests.service.fakes import QueuedEngine

pytestmark = pytest.mark.integration


def kongming_ask(tmp_path: Path, model: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    persona = {"name": "tiny", "display_name": "小", "system_prompt": "你是小助手。", "model": str(model)}
    env = {**os.environ, "KONGMING_PERSONAS": json.dumps([persona]), "KONGMING_DEFAULT_PERSONA": "tiny",
           "PYTHONPATH": str(REPO_ROOT)}
    for name in ("HF_HUB_DISABLE_PROGRESS_BARS", "TRANSFORMERS_VERBOSITY", "TRANSFORMERS_NO_ADVISORY_WARNINGS"):
        env.pop(name, None)  # what a user's shell has: nothing set
    args = ["ask", "你好", "--route", "persona", "--max-tokens", "4", "--data-dir", str(tmp_path / "svc"), *extra]
    return subprocess.run([sys.executable, "-m", "service.cli", *args], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, check=False)


def test_ask_prints_no_weights_bar_and_no_warnings(tmp_path, tiny_chat_model):
    r = kongming_ask(tmp_path, tiny_chat_model)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("route: persona"), r.stdout
    assert "Loading weights" not in r.stderr and "it/s" not in r.stderr, r.stderr
    assert "Warning" not in r.stderr and "warn" not in r.stderr.lower(), r.stderr


def test_ask_still_shows_a_real_error(tmp_path):
    missing = tmp_path / "no-model-here"
    missing.mkdir()
    r = kongming_ask(tmp_path, missing)
    assert r.returncode == 1 and "error:" in r.stderr and "no-model-here" in r.stderr, (r.stdout, r.stderr)


class LoadingEngine(QueuedEngine):
    """An in-process engine whose model loads on the first request (LocalEngine's `loaded`)."""

    loaded = False

    async def stream(self, messages: Any, params: Any) -> AsyncIterator[Any]:
        self.loaded = True
        async for delta in super().stream(messages, params):
            yield delta


def test_the_page_says_the_persona_model_is_loading_and_the_api_does_not(make_client):
    from service.ui import LOADING, make_respond

    engine = LoadingEngine("zhuge-liang", ["亮以为然。", "亮再拜。", "足下所言甚是。"])
    client = make_client(engines={"zhuge-liang": engine, "zhen-huan": QueuedEngine("zhen-huan")})
    respond = make_respond(client.app.state.chat, client.app.state.keys)

    async def states() -> list[str]:
        seen = []
        async for _, history, _ in respond("先生安好？", [], [], "persona", "zhuge-liang", ""):
            seen.append(history[-1]["content"])
        return seen

    first = asyncio.run(states())
    assert LOADING in first and first.index(LOADING) < next(i for i, s in enumerate(first) if "亮以为然" in s)
    assert LOADING not in first[-1]
    later = asyncio.run(states())  # loaded now: the usual "…"
    assert LOADING not in later and later[0] == "…" and "亮再拜" in later[-1]

    engine.loaded = False
    body = client.post("/v1/chat/completions", json={"model": "kongming-persona-zhuge-liang",
                                                     "messages": [{"role": "user", "content": "先生？"}]})
    assert body.status_code == 200 and body.json()["choices"][0]["message"]["content"] == "足下所言甚是。"
    assert "loading" not in body.text


def test_ask_on_a_mistyped_knowledge_base_fails_saying_so_and_creates_none(tmp_path, tiny_chat_model, novel_file):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "KONGMING_DATA_DIR": str(tmp_path / "svc")}
    ingest = [sys.executable, "-m", "ingest.cli"]
    subprocess.run([*ingest, "add", str(novel_file), "--no-progress"], env=env, check=True, capture_output=True)
    r = subprocess.run([sys.executable, "-m", "service.cli", "ask", "孔明在哪里借的东风？", "--collection", "defualt",
                        "--data-dir", str(tmp_path / "svc"), "--max-tokens", "4"], env=env, capture_output=True,
                       text=True, timeout=300, check=False)  # fmt: skip
    assert "'defualt' does not exist (knowledge bases here: default)" in r.stderr, (r.stdout, r.stderr)
    assert r.returncode == 1  # a script sees the failure
    assert "没有这个知识库" in r.stdout and "空" not in r.stdout  # not "empty": it does not exist
    listed = subprocess.run([*ingest, "collections"], env=env, capture_output=True, text=True, check=True)
    assert listed.stdout.split() == ["default"]


@pytest.mark.parametrize(("env", "names"), [({"KONGMING_API_KEYS": "sk-mine-1"}, ["KONGMING_API_KEYS:", "JSON list"]),
                                            ({"KONGMING_PORT": "eighty"}, ["KONGMING_PORT='eighty':", "integer"])])
def test_a_setting_that_cannot_be_read_is_one_line_naming_it(tmp_path, monkeypatch, capsys, env, names):
    from service.cli import main

    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("KONGMING_DATA_DIR", str(tmp_path))
    assert main(["keys", "list"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and all(n in err for n in names) and "Traceback" not in err, err
    assert err.startswith("error: KONGMING_") and "sk-mine-1" not in err  # as ingest says it; a key is not echoed
