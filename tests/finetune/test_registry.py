"""The fine-tuned model registry: rows shared through SQLite, seen by another instance at once, bind/unbind, delete."""

from __future__ import annotations

from pathlib import Path

import pytest

from finetune.jobs.registry import FineTunedModel, ModelRegistry


def _model(name: str = "a", created_at: int = 100, **extra: object) -> FineTunedModel:
    fields: dict = {
        "id": f"ft:gemma-3-270m:{name}:ftjob-{name}",
        "base_model": "gemma-3-270m",
        "adapter_path": f"/runs/{name}/adapter",
        "job_id": f"ftjob-{name}",
        "task": "chat",
        "created_at": created_at,
    }
    fields.update(extra)
    return FineTunedModel(**fields)


def test_add_get_list_round_trip(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    late = _model("late", created_at=200, task="classify", system_prompt="你是一位外卖评论好评差评评论专家。")
    early = _model("early", created_at=100)
    registry.add(late)
    registry.add(early)

    assert registry.list() == [early, late]
    assert registry.get(late.id) == late
    assert registry.get("ft:gemma-3-270m:none:ftjob-none") is None
    assert (tmp_path / "finetune" / "models.sqlite3").is_file()


def test_a_row_added_by_another_process_is_seen_at_once(tmp_path: Path) -> None:
    reader = ModelRegistry(tmp_path)
    assert reader.list() == []
    ModelRegistry(tmp_path).add(_model("new"))  # the worker's instance
    assert [m.id for m in reader.list()] == ["ft:gemma-3-270m:new:ftjob-new"]


def test_add_again_replaces_the_row(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    registry.add(_model("a", adapter_path="/old"))
    registry.add(_model("a", adapter_path="/new"))
    assert [m.adapter_path for m in registry.list()] == ["/new"]


def test_unknown_task_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="task must be one of chat, classify"):
        ModelRegistry(tmp_path).add(_model("x", task="summarise"))


def test_delete(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    registry.add(_model("a"))
    assert registry.delete(_model("a").id) is True
    assert registry.delete(_model("a").id) is False
    assert registry.list() == []


def test_bind_moves_a_persona_and_none_unbinds(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    registry.add(_model("a"))
    registry.add(_model("b"))
    a, b = _model("a").id, _model("b").id

    assert registry.bind(a, "zhuge-liang").persona == "zhuge-liang"
    assert registry.bind(b, "zhuge-liang").persona == "zhuge-liang"
    assert registry.get(a).persona is None  # type: ignore[union-attr]  # one model per persona
    assert registry.bind(b, None).persona is None
    with pytest.raises(KeyError):
        registry.bind("ft:gemma-3-270m:none:ftjob-none", "zhen-huan")
