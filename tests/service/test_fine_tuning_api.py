"""/v1/fine_tuning/jobs with the official `openai` client against the real service (uvicorn) and a real worker
process training a tiny random model: the seed walkthrough (upload reviews -> job -> events -> chat with the tuned
model), cancel, pagination, event shape, OpenAI-shaped errors."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import shared_file

SYSTEM = "你是一位外卖评论好评差评评论专家。"
LABELS = {"0": "差评", "1": "好评"}
# A few steps of a tiny model: the worker's train + eval take ~15 s on a busy 2-core machine.
FAST: dict[str, Any] = {
    "lora": {"r": 4, "alpha": 8, "dropout": 0, "target_modules": ["q_proj", "v_proj"]},
    "train": {"max_steps": 4, "max_seq_len": 128, "eval_every": 2, "save_every": 2, "warmup_ratio": 0,
              "device": "cpu"},
    "data": {"val_split": 0.25, "dedupe": False},
    "eval": {"max_samples": 2, "max_new_tokens": 4, "compare_base": False},
}  # fmt: skip


def review_file(path: Path, per_label: int = 12) -> Path:
    """Messages JSONL of the first `per_label` reviews of each label in waimai_10k.csv (the file is sorted by
    label: its first rows are all 好评)."""
    rows: dict[str, list[str]] = {"0": [], "1": []}
    with shared_file("classify", "waimai_10k.csv").open(encoding="utf-8-sig", newline="") as f:
        for row in csv.DictReader(f):
            if len(rows[row["label"]]) < per_label:
                rows[row["label"]].append(row["review"])
    lines = [
        json.dumps({"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text},
                                 {"role": "assistant", "content": LABELS[label]}]}, ensure_ascii=False)
        for label, texts in rows.items() for text in texts
    ]  # fmt: skip
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def ft_service(kb_settings, tiny_chat_model, tmp_path):
    """Start the service (real uvicorn) with the tiny model as the fine-tunable base `tiny`; yields a function
    returning (openai client, app). Workers the app started are stopped afterwards."""
    import openai

    from service.app import build_chat_service, create_app
    from service.settings import get_service_settings
    from tests.service.conftest import ServerThread
    from tests.service.fakes import QueuedEngine

    started: list[tuple[ServerThread, Any]] = []

    def start(**overrides: Any) -> tuple[Any, Any]:
        settings = get_service_settings(data_dir=tmp_path / "svc", api_keys=["k"], ui=False,
                                        finetune_bases={"tiny": str(tiny_chat_model)}, **overrides)  # fmt: skip
        engines = {p.name: QueuedEngine(p.name) for p in settings.personas}
        app = create_app(settings, chat=build_chat_service(settings, kb_settings, engines=engines), ui=False)
        server = ServerThread(app).start()
        started.append((server, app))
        return openai.OpenAI(base_url=server.url + "/v1", api_key="k", max_retries=0), app

    yield start
    for server, app in started:
        if app.state.jobs_worker is not None:
            app.state.jobs_worker.stop()
        server.stop()


def wait_for(client: Any, job_id: str, statuses: set[str], timeout: float = 240.0) -> Any:
    """Poll list_events (as a console does) until the job reaches one of `statuses`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        client.fine_tuning.jobs.list_events(job_id, limit=5)
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in statuses:
            return job
        time.sleep(0.5)
    events = [e.message for e in client.fine_tuning.jobs.list_events(job_id, limit=50)]
    raise AssertionError(f"job {job_id} still {job.status} after {timeout} s: {events}")


def test_seed_walkthrough_upload_train_watch_chat(ft_service, tmp_path):
    client, _ = ft_service()
    upload = client.files.create(file=review_file(tmp_path / "waimai.jsonl").open("rb"), purpose="fine-tune")
    assert upload.status == "processed" and upload.model_extra["kongming"]["records"] == 24
    job = client.fine_tuning.jobs.create(
        model="tiny", training_file=upload.id, suffix="waimai", seed=100,
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1, "batch_size": 4,
                                                                         "learning_rate_multiplier": 25}}},
        extra_body={"kongming": FAST},
    )  # fmt: skip
    assert job.status in ("queued", "running") and job.object == "fine_tuning.job"
    assert job.hyperparameters.batch_size == 4 and job.method.type == "supervised" and job.seed == 100
    done = wait_for(client, job.id, {"succeeded", "failed", "cancelled"})
    assert done.status == "succeeded", [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=50)]
    assert done.fine_tuned_model == f"ft:tiny:waimai:{job.id}" and done.trained_tokens > 0 and done.finished_at

    events = list(client.fine_tuning.jobs.list_events(job.id, limit=100))
    assert all(e.object == "fine_tuning.job.event" and e.level in ("info", "warn", "error") for e in events)
    steps = [e.data for e in events if e.type == "metrics" and "train_loss" in (e.data or {})]
    assert sorted(d["step"] for d in steps) == [1, 2, 3, 4] and all(d["total_steps"] == 4 for d in steps)
    assert all(d["tokens_per_s"] > 0 and "eta_seconds" in d for d in steps)
    assert any("valid_loss" in (e.data or {}) for e in events)
    assert any(e.message.startswith("Evaluation:") and e.data["val"]["tuned"]["loss"] > 0 for e in events)
    names = {client.files.retrieve(f).filename: f for f in done.result_files}
    assert set(names) == {"step_metrics.csv", "loss_curve.png", "eval.json"}
    assert client.files.content(names["step_metrics.csv"]).read().startswith(b"step,train_loss,valid_loss")
    assert client.files.content(names["loss_curve.png"]).read()[:4] == b"\x89PNG"
    ckpts = list(client.fine_tuning.jobs.checkpoints.list(job.id))
    assert ckpts and ckpts[0].step_number == 4 and ckpts[0].metrics.train_loss is not None

    assert done.fine_tuned_model in [m.id for m in client.models.list()]
    answer = client.chat.completions.create(
        model=done.fine_tuned_model, max_tokens=4,
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": "送餐太慢，菜都凉了"}],
    )  # fmt: skip
    assert answer.model == done.fine_tuned_model and answer.choices[0].message.content


def test_cancel_stops_a_running_job_and_publishes_nothing(ft_service, tmp_path):
    client, app = ft_service()
    upload = client.files.create(file=review_file(tmp_path / "waimai.jsonl").open("rb"), purpose="fine-tune")
    slow = {**FAST, "train": {**FAST["train"], "max_steps": 5000, "save_every": 2}}
    job = client.fine_tuning.jobs.create(model="tiny", training_file=upload.id, extra_body={"kongming": slow})
    deadline = time.monotonic() + 180
    while not any((e.data or {}).get("step", 0) >= 3 for e in client.fine_tuning.jobs.list_events(job.id)):
        assert time.monotonic() < deadline, "the job never trained"
        time.sleep(0.3)
    assert client.fine_tuning.jobs.retrieve(job.id).estimated_finish is not None
    client.fine_tuning.jobs.cancel(job.id)
    done = wait_for(client, job.id, {"cancelled", "failed", "succeeded"}, timeout=30)
    assert done.status == "cancelled" and done.fine_tuned_model is None and done.finished_at
    run = Path(app.state.settings.data_dir) / "finetune" / "jobs" / job.id / "run"
    assert not (run / "adapter_config.json").exists()
    assert all(not p.name.startswith(".") for p in run.rglob("*"))  # no half-written checkpoint
    assert not [m for m in client.models.list() if job.id in m.id]
    assert next(iter(client.fine_tuning.jobs.list_events(job.id))).message.startswith("Job cancelled")
    import openai

    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.cancel(job.id)


def test_list_pages_events_shape_and_errors(ft_service, tmp_path):
    import openai

    client, _ = ft_service(finetune_worker=False)  # jobs stay queued: nothing trains here
    upload = client.files.create(file=review_file(tmp_path / "w.jsonl", 3).open("rb"), purpose="fine-tune")
    ids = [client.fine_tuning.jobs.create(model="tiny", training_file=upload.id, hyperparameters={"n_epochs": 2},
                                          extra_body={"kongming": FAST}).id for _ in range(3)]  # fmt: skip
    first = client.fine_tuning.jobs.list(limit=2)
    assert [j.id for j in first.data] == ids[::-1][:2] and first.has_more
    assert [j.id for j in client.fine_tuning.jobs.list(limit=2, after=ids[1]).data] == [ids[0]]
    assert [j.id for j in client.fine_tuning.jobs.list(limit=1)] == ids[::-1]  # the client's auto-paging
    job = client.fine_tuning.jobs.retrieve(ids[0])
    assert job.status == "queued" and job.hyperparameters.n_epochs == 2 and job.hyperparameters.batch_size == 8
    assert job.model_extra["kongming"]["lora"] == FAST["lora"]  # the values it trains with, as sent
    from finetune.training.config import LoraConfig

    bare = client.fine_tuning.jobs.create(model="tiny", training_file=upload.id)  # and the defaults, when none sent
    defaults = LoraConfig()
    assert bare.model_extra["kongming"]["lora"] == {"r": defaults.r, "alpha": defaults.alpha,
                                                    "dropout": defaults.dropout,
                                                    "target_modules": list(defaults.target_modules)}
    client.fine_tuning.jobs.cancel(bare.id)
    events = client.fine_tuning.jobs.list_events(ids[0], limit=1)
    assert events.has_more and events.data[0].message.startswith("Files validated")
    older = client.fine_tuning.jobs.list_events(ids[0], after=events.data[0].id)
    assert [e.message.split(":")[0] for e in older.data] == ["Validating training file"]
    assert client.fine_tuning.jobs.cancel(ids[0]).status == "cancelled"

    for call in (lambda: client.fine_tuning.jobs.retrieve("ftjob-nope"),
                 lambda: client.fine_tuning.jobs.cancel("ftjob-nope"),
                 lambda: client.fine_tuning.jobs.list_events("ftjob-nope"),
                 lambda: client.fine_tuning.jobs.checkpoints.list("ftjob-nope")):  # fmt: skip
        with pytest.raises(openai.NotFoundError) as err:
            call()
        assert err.value.body["code"] == "job_not_found" and err.value.body["type"] == "invalid_request_error"
    bad = [({"model": "gpt-4o-mini", "training_file": upload.id}, "model"),
           ({"model": "tiny", "training_file": "file-nope"}, "training_file"),
           ({"model": "tiny", "training_file": upload.id, "hyperparameters": {"n_epochs": 0}},
            "hyperparameters.n_epochs"),
           ({"model": "tiny", "training_file": upload.id, "hyperparameters": {"batch_size": 100000000000}},
            "hyperparameters.batch_size"),
           ({"model": "tiny", "training_file": upload.id, "hyperparameters": {"batch_size": True}},
            "hyperparameters.batch_size"),
           ({"model": "tiny", "training_file": upload.id, "hyperparameters": {"n_epochs": 1000000000}},
            "hyperparameters.n_epochs"),
           ({"model": "tiny", "training_file": upload.id, "hyperparameters": {"learning_rate_multiplier": 1e308}},
            "hyperparameters.learning_rate_multiplier"),
           ({"model": "tiny", "training_file": upload.id, "extra_body": {"kongming": {"lora": {"r": 10**9}}}},
            "kongming.lora.r"),
           ({"model": "tiny", "training_file": upload.id, "extra_body": {"kongming": {"lora": {"r": 0}}}},
            "kongming.lora.r"),
           ({"model": "tiny", "training_file": upload.id,
             "extra_body": {"kongming": {"lora": {"target_modules": ["qproj"]}}}},
            "kongming.lora.target_modules")]  # fmt: skip
    for kwargs, param in bad:
        with pytest.raises(openai.BadRequestError) as err:
            client.fine_tuning.jobs.create(**kwargs)
        assert err.value.body["param"] == param, err.value.body
        assert "'auto'" not in err.value.body["message"], err.value.body  # the bound it broke, not the literal
    with pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.jobs.create(model="tiny", training_file=upload.id, hyperparameters={"batch_size": 10**11})
    assert "256" in err.value.body["message"], err.value.body
    assert len(client.fine_tuning.jobs.list().data) == 4  # the three and the bare one
