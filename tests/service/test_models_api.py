"""/v1/models with fine-tuned models: a registry row answers at once, binds to a persona, is deleted; through an
in-process shared base and through a model server's runtime LoRA endpoints (a small real HTTP server standing in for
vLLM; the real vLLM is in test_vllm.py)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from finetune.jobs.registry import FineTunedModel, ModelRegistry

from .conftest import ServerThread

KEY = "sk-test-models"
AUTH = {"Authorization": f"Bearer {KEY}"}
FT = "ft:tiny:reviews:ftjob-abc123"
ASK = {"messages": [{"role": "user", "content": "你好，诸葛亮"}], "max_tokens": 8, "temperature": 0}


def _add(data_dir: Path, adapter: Path, base: str, **extra: Any) -> FineTunedModel:
    model = FineTunedModel(id=extra.pop("id", FT), base_model=base, adapter_path=str(adapter), job_id="ftjob-abc123",
                           task=extra.pop("task", "chat"), created_at=int(time.time()), **extra)
    ModelRegistry(data_dir).add(model)
    return model


def _chat(client: Any, model: str) -> Any:
    return client.post("/v1/chat/completions", json={**ASK, "model": model}, headers=AUTH)


def test_a_fine_tuned_model_is_served_at_once_bound_and_deleted(
    make_client: Any, tiny_chat_model: Path, tmp_path: Path
) -> None:
    from tests.tinymodel import build_random_lora

    client = make_client(api_keys=[KEY])
    assert FT not in [m["id"] for m in client.get("/v1/models", headers=AUTH).json()["data"]]
    assert _chat(client, FT).status_code == 404

    _add(tmp_path / "svc", build_random_lora(tiny_chat_model, tmp_path / "lora"), str(tiny_chat_model))
    cards = {m["id"]: m for m in client.get("/v1/models", headers=AUTH).json()["data"]}
    assert cards[FT]["object"] == "model" and cards[FT]["owned_by"] == "user" and cards[FT]["created"] > 0
    detail = client.get(f"/v1/models/{FT}", headers=AUTH).json()
    assert detail["kongming"]["task"] == "chat" and detail["parent"] == tiny_chat_model.name

    answer = _chat(client, FT)
    assert answer.status_code == 200, answer.text
    tuned_text = answer.json()["choices"][0]["message"]["content"]
    assert answer.json()["model"] == FT and tuned_text

    # bound: the persona route answers with the fine-tuned model instead of its own (a queued fake here)
    persona = "kongming-persona-zhuge-liang"
    before = _chat(client, persona).json()["choices"][0]["message"]["content"]
    bound = client.post(f"/v1/models/{FT}/persona", json={"persona": "zhuge-liang"}, headers=AUTH)
    assert bound.status_code == 200 and bound.json()["kongming"]["persona"] == "zhuge-liang"
    spoke = _chat(client, persona).json()
    assert spoke["choices"][0]["message"]["content"] != before
    # and says so: in the route's reason, and in the persona's card of the model list
    assert spoke["kongming"]["route"]["reason"].endswith(f"; answered by fine-tuned model {FT}"), spoke["kongming"]
    cards = {m["id"]: m for m in client.get("/v1/models", headers=AUTH).json()["data"]}
    assert cards[persona]["description"].endswith(f", answered by fine-tuned model {FT}")
    from service.ui.render import reason_zh

    assert reason_zh(spoke["kongming"]["route"]["reason"], "persona").endswith(f"由微调模型 {FT} 回答")
    unknown = client.post(f"/v1/models/{FT}/persona", json={"persona": "cao-cao"}, headers=AUTH)
    assert unknown.status_code == 400 and "zhuge-liang" in unknown.json()["error"]["message"]
    assert client.post(f"/v1/models/{FT}/persona", json={"persona": None}, headers=AUTH).json()["kongming"][
        "persona"] is None  # fmt: skip

    deleted = client.delete(f"/v1/models/{FT}", headers=AUTH)
    assert deleted.json() == {"id": FT, "object": "model", "deleted": True}
    assert FT not in [m["id"] for m in client.get("/v1/models", headers=AUTH).json()["data"]]
    gone = _chat(client, FT)
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "model_not_found"
    assert client.delete(f"/v1/models/{FT}", headers=AUTH).status_code == 404



def test_a_model_deleted_through_one_replica_leaves_the_others_memory(
    make_client: Any, tiny_chat_model: Path, tmp_path: Path
) -> None:
    """Two app instances on one data folder: a model deleted through A stops answering on B at once, and B frees
    its adapter at its next fine-tuned or persona request (it held it in memory until its restart before)."""
    import asyncio

    from tests.tinymodel import build_random_lora

    other = "ft:tiny:other:ftjob-other"
    _add(tmp_path / "svc", build_random_lora(tiny_chat_model, tmp_path / "lora"), str(tiny_chat_model))
    _add(tmp_path / "svc", build_random_lora(tiny_chat_model, tmp_path / "two", seed=2), str(tiny_chat_model),
         id=other)  # fmt: skip
    replica_a, replica_b = make_client(api_keys=[KEY]), make_client(api_keys=[KEY])
    assert _chat(replica_b, FT).status_code == 200 and _chat(replica_b, other).status_code == 200
    engines = replica_b.app.state.chat.engines
    host = asyncio.run(engines.fine_tuned(ModelRegistry(tmp_path / "svc").get(other))).host
    assert {FT, other} <= set(host.adapters)

    assert replica_a.delete(f"/v1/models/{FT}", headers=AUTH).json()["deleted"] is True
    assert FT in host.adapters  # B has not been asked anything since
    assert _chat(replica_b, FT).status_code == 404  # the registry is read first: not served, even while held
    assert _chat(replica_b, other).status_code == 200
    assert FT not in host.adapters and other in host.adapters

    assert replica_a.delete(f"/v1/models/{other}", headers=AUTH).json()["deleted"] is True
    persona = _chat(replica_b, "kongming-persona-zhuge-liang")  # a persona request looks at the registry too
    assert persona.status_code == 200 and other not in host.adapters

def test_built_in_models_cannot_be_deleted_and_management_needs_a_key(make_client: Any) -> None:
    client = make_client(api_keys=[KEY])
    refused = client.delete("/v1/models/kongming-persona-zhuge-liang", headers=AUTH)
    assert refused.status_code == 403 and "built into the service" in refused.json()["error"]["message"]
    assert client.delete("/v1/models/ft:x:y:z").status_code == 401
    assert client.post("/v1/models/kongming-rag/persona", json={"persona": None}, headers=AUTH).status_code == 403


def test_the_persona_prefix_without_a_name_is_no_model(make_client: Any) -> None:
    client = make_client()  # (schemathesis found GET /v1/models/kongming-persona- a 500)
    got = client.get("/v1/models/kongming-persona-")
    assert got.status_code == 404 and got.json()["error"]["param"] == "model", got.text
    chat = client.post("/v1/chat/completions", json={"model": "kongming-persona-",
                                                     "messages": [{"role": "user", "content": "先生好"}]})
    assert chat.status_code == 404 and "kongming-persona-zhuge-liang" in chat.json()["error"]["message"]
    assert client.get("/v1/models/kongming-persona-zhuge-liang").json()["id"] == "kongming-persona-zhuge-liang"


class FakeVLLM:
    """vLLM's runtime LoRA endpoints (load/unload_lora_adapter, its messages) and a chat that names the adapter."""

    def __init__(self) -> None:
        self.loaded: dict[str, str] = {}
        self.app = FastAPI()
        self.app.post("/v1/load_lora_adapter")(self.load)
        self.app.post("/v1/unload_lora_adapter")(self.unload)
        self.app.post("/v1/chat/completions")(self.chat)

    async def load(self, request: Request) -> Any:
        body = await request.json()
        if body["lora_name"] in self.loaded:
            return _error(400, f"The lora adapter '{body['lora_name']}' has already been loaded. If you want to load "
                               "the adapter in place, set 'load_inplace' to True.")  # fmt: skip
        self.loaded[body["lora_name"]] = body["lora_path"]
        return PlainTextResponse(f"Success: LoRA adapter '{body['lora_name']}' added successfully.")

    async def unload(self, request: Request) -> Any:
        name = (await request.json())["lora_name"]
        if self.loaded.pop(name, None) is None:
            return _error(404, f"The lora adapter '{name}' cannot be found.")
        return PlainTextResponse(f"Success: LoRA adapter '{name}' removed successfully.")

    async def chat(self, request: Request) -> Any:
        body = await request.json()
        if body["model"] not in self.loaded:
            return _error(404, f"The model `{body['model']}` does not exist.")
        text = f"{body['model']}|{body['messages'][0]['content']}"
        return {"id": "c", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": "BadRequestError", "param": None, "code": status}},
                        status_code=status)


def test_upstream_adapters_go_through_vllms_load_and_unload(make_client: Any, tmp_path: Path) -> None:
    vllm = FakeVLLM()
    server = ServerThread(vllm.app).start()
    try:
        client = make_client(api_keys=[KEY], upstream_url=server.url + "/v1")
        prompt = "你是一位外卖评论好评差评评论专家。"
        _add(tmp_path / "svc", tmp_path / "adapter", "gemma-3-270m", task="classify", system_prompt=prompt)
        vllm.loaded[FT] = str(tmp_path / "adapter")  # loaded already (another replica): still served
        answer = _chat(client, FT)
        assert answer.status_code == 200, answer.text
        # the classification model gets its training system prompt when the request sends none
        assert answer.json()["choices"][0]["message"]["content"] == f"{FT}|{prompt}"

        other = "ft:gemma-3-270m:two:ftjob-two"
        _add(tmp_path / "svc", tmp_path / "two", "gemma-3-270m", id=other)
        assert _chat(client, other).status_code == 200
        assert vllm.loaded[other] == str(tmp_path / "two")

        assert client.delete(f"/v1/models/{other}", headers=AUTH).json()["deleted"] is True
        assert other not in vllm.loaded and FT in vllm.loaded
    finally:
        server.stop()


def test_the_pages_deploy_binds_a_persona_says_so_and_unbinds_it(
    make_client: Any, tiny_chat_model: Path, tmp_path: Path, monkeypatch: Any
) -> None:
    """«deploy to Chat» with a persona says the persona now answers with the model (and that it was trained with
    another system prompt); deploying again without one gives the persona its own model back."""
    import asyncio
    from types import SimpleNamespace

    from service.ui import finetune, ft_ops
    from tests.tinymodel import build_random_lora

    client = make_client(api_keys=[KEY])
    _add(tmp_path / "svc", build_random_lora(tiny_chat_model, tmp_path / "lora"), str(tiny_chat_model),
         system_prompt="你是甄嬛。")
    monkeypatch.setattr(ft_ops, "job_view", lambda settings, job_id: (SimpleNamespace(fine_tuned_model=FT),))
    monkeypatch.setattr(finetune, "model_choices", lambda chat: [FT])
    _, deploy = finetune.make_actions(client.app.state.chat, client.app.state.keys)
    _, said = asyncio.run(deploy(KEY, "ftjob-abc123", "zhuge-liang"))
    assert "persona zhuge-liang answers with it instead of its own model" in said and "'你是甄嬛。'" in said, said
    assert client.get(f"/v1/models/{FT}", headers=AUTH).json()["kongming"]["persona"] == "zhuge-liang"
    _, said = asyncio.run(deploy(KEY, "ftjob-abc123", finetune.UNBOUND))
    assert "persona zhuge-liang answers with its own model again" in said, said
    assert client.get(f"/v1/models/{FT}", headers=AUTH).json()["kongming"]["persona"] is None
