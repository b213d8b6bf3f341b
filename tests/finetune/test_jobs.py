"""Fine-tuning jobs below the API: file checks, job -> config, the store's pages, and the worker running a tiny
model for real (train, eval, result files, the registry)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from finetune.jobs.files import FileRejected, FileStore
from finetune.jobs.queue import JobStateError, cancel_job, create_job
from finetune.jobs.spec import SpecError
from finetune.jobs.store import JobStore

from .conftest import PAIRS


def messages_jsonl(n: int = 24, system: str | None = "你是诸葛亮。") -> bytes:
    lines = []
    for i in range(n):
        q, a = PAIRS[i % len(PAIRS)]
        sys_msg = [{"role": "system", "content": system}] if system else []
        msgs = [*sys_msg, {"role": "user", "content": q}, {"role": "assistant", "content": a}]
        lines.append(json.dumps({"messages": msgs}, ensure_ascii=False))
    return ("\n".join(lines) + "\n").encode("utf-8")


def fast_job(base: Path, file_id: str, **extra: object) -> dict:
    request = {
        "model": "tiny", "base": str(base), "training_file": file_id, "validation_file": None,
        "hyperparameters": {"n_epochs": 1, "batch_size": 4, "learning_rate_multiplier": 50},
        "suffix": "t", "seed": 1,
        "kongming": {"lora": {"r": 4, "alpha": 8, "dropout": 0},
                     "train": {"max_steps": 4, "max_seq_len": 96, "eval_every": 2, "save_every": 2,
                               "warmup_ratio": 0, "device": "cpu"},
                     "data": {"val_split": 0.2, "dedupe": False},
                     "eval": {"max_samples": 2, "max_new_tokens": 4, "compare_base": False}},
    }  # fmt: skip
    return {**request, **extra}


def test_bad_lines_are_reported_with_their_numbers(tmp_path):
    good = messages_jsonl(3).decode().splitlines()
    text = "\n".join([good[0], "{not json", json.dumps({"messages": [{"role": "user", "content": "hi"}]}), good[1]])
    record = FileStore(tmp_path).create(text.encode(), "mixed.jsonl", "fine-tune")
    assert record.details["records"] == 2 and record.details["format"] == "openai"
    lines = [(p["line"], p["message"]) for p in record.details["problems"]]
    assert [n for n, _ in lines] == [2, 3]
    assert "the user's" in lines[1][1]
    assert "line 2" in record.status_details and "line 3" in record.status_details
    assert FileStore(tmp_path).store.get_file(record.id) == record


def test_a_file_with_no_valid_record_is_refused_and_not_kept(tmp_path):
    files = FileStore(tmp_path)
    bad = b'{"messages": [{"role": "assistant", "content": "x"}]}\n{"messages": []}\n'
    with pytest.raises(FileRejected) as err:
        files.create(bad, "bad.jsonl", "fine-tune")
    assert "line 1" in str(err.value) and [p["line"] for p in err.value.problems] == [1, 2]
    assert files.store.list_files()[0] == [] and not any(files.root.iterdir())
    with pytest.raises(FileRejected, match="cannot tell the format"):
        files.create(b'{"a": 1}\n', "x.jsonl", "fine-tune")


def test_alpaca_and_sharegpt_files_are_recognised(tmp_path):
    files = FileStore(tmp_path)
    alpaca = files.create(json.dumps([{"instruction": "你好", "output": "好"}], ensure_ascii=False).encode(),
                          "a.json", "fine-tune")  # fmt: skip
    share = files.create(json.dumps({"conversations": [{"from": "human", "value": "在吗"},
                                                       {"from": "gpt", "value": "在"}]}).encode(),
                         "s.jsonl", "fine-tune")  # fmt: skip
    assert (alpaca.details["format"], share.details["format"]) == ("alpaca", "sharegpt")


def test_store_pages_newest_first(tmp_path):
    files = FileStore(tmp_path)
    ids = [files.create(messages_jsonl(2), f"f{i}.jsonl", "fine-tune").id for i in range(5)]
    page, more = files.store.list_files(limit=2)
    assert [f.id for f in page] == ids[::-1][:2] and more
    page, more = files.store.list_files(limit=10, after=page[-1].id)
    assert [f.id for f in page] == ids[::-1][2:] and not more
    asc, _ = files.store.list_files(order="asc", limit=2)
    assert [f.id for f in asc] == ids[:2]


def test_job_request_becomes_a_config_and_errors_name_the_field(tmp_path, tiny_model):
    fid = FileStore(tmp_path).create(messages_jsonl(), "d.jsonl", "fine-tune").id
    job = create_job(tmp_path, fast_job(tiny_model, fid, hyperparameters={"n_epochs": "auto"}))
    assert job.status == "queued" and job.request["fine_tuned_model"] == f"ft:tiny:t:{job.id}"
    hp = job.request["hyperparameters"]
    assert hp == {"n_epochs": 3, "batch_size": 8, "learning_rate_multiplier": 1.0}
    assert job.request["system_prompt"] == "你是诸葛亮。"
    from finetune.training.config import load_config

    cfg = load_config(tmp_path.resolve() / "finetune" / "jobs" / job.id / "job.yaml")
    assert (cfg.lora.r, cfg.train.max_steps, cfg.train.epochs, cfg.train.lr) == (4, 4, 3, 2e-4)
    with pytest.raises(SpecError) as err:
        create_job(tmp_path, fast_job(tiny_model, fid, kongming={"lora": {"r": 0}}))
    assert err.value.param == "kongming.lora.r"
    with pytest.raises(SpecError, match=r"unknown key kongming\.lora\.bogus; known keys: r,") as err:
        create_job(tmp_path, fast_job(tiny_model, fid, kongming={"lora": {"bogus": 1}}))
    assert err.value.param == "kongming.lora.bogus"
    with pytest.raises(SpecError) as err:
        create_job(tmp_path, fast_job(tiny_model, fid, hyperparameters={"n_epochs": 0}))
    assert err.value.param == "hyperparameters.n_epochs"
    with pytest.raises(SpecError) as err:
        create_job(tmp_path, fast_job(tiny_model, "file-nope"))
    assert err.value.param == "training_file"
    with pytest.raises(SpecError, match="learning_rate_multiplier"):
        create_job(tmp_path, fast_job(tiny_model, fid, kongming={"train": {"lr": 1}}))
    for bad in ("q_proj,no_such_proj", "mlp", "1", "input_layernorm", ["q_proj", " "]):  # at once, not at training
        with pytest.raises(SpecError, match=r"(not a layer of this model.*q_proj|empty module name)") as err:
            create_job(tmp_path, fast_job(tiny_model, fid, kongming={"lora": {"target_modules": bad}}))
        assert err.value.param == "kongming.lora.target_modules", bad
    with pytest.raises(SpecError, match="not a layer of this model") as err:  # not converted yet: its architecture's
        create_job(tmp_path, fast_job("gemma-3-270m", fid, kongming={"lora": {"target_modules": ["qproj"]}}))
    assert not (tmp_path / "models").exists()
    dotted = create_job(tmp_path, fast_job(tiny_model, fid, kongming={"lora": {"target_modules": "self_attn.q_proj"}}))
    assert dotted.status == "queued"  # peft's suffix match
    assert len(JobStore(tmp_path).list_jobs()[0]) == 2  # refused requests store nothing


def test_cancel_a_queued_job_and_refuse_cancelling_a_finished_one(tmp_path, tiny_model):
    fid = FileStore(tmp_path).create(messages_jsonl(), "d.jsonl", "fine-tune").id
    store = JobStore(tmp_path)
    job = create_job(tmp_path, fast_job(tiny_model, fid))
    assert cancel_job(store, job.id).status == "cancelled"
    with pytest.raises(JobStateError):
        cancel_job(store, job.id)
    assert store.claim_next("w") is None


def test_worker_trains_evaluates_and_registers_the_model(tmp_path, tiny_model):
    from finetune.jobs.registry import ModelRegistry
    from finetune.jobs.worker import Worker

    fid = FileStore(tmp_path).create(messages_jsonl(), "d.jsonl", "fine-tune").id
    job = create_job(tmp_path, fast_job(tiny_model, fid))
    Worker(tmp_path, poll=0.1).run(once=True)
    store = JobStore(tmp_path)
    done = store.get_job(job.id)
    assert done is not None and done.status == "succeeded", (done, store.list_events(job.id, limit=50))
    assert done.trained_tokens and done.trained_tokens > 0 and done.finished_at
    names = [store.get_file(f).filename for f in done.result_files]  # type: ignore[union-attr]
    assert names == ["step_metrics.csv", "loss_curve.png", "eval.json"]
    events, _ = store.list_events(job.id, limit=100)
    steps = [e.data["step"] for e in events if e.type == "metrics" and e.data and "train_loss" in e.data]
    assert sorted(steps) == [1, 2, 3, 4]
    assert any(e.data and "valid_loss" in e.data for e in events)
    assert any(e.message.startswith("Evaluation: val loss") for e in events)
    assert events[0].message == "The job has successfully completed"
    model = ModelRegistry(tmp_path).get(done.fine_tuned_model or "")
    assert model is not None and model.task == "chat" and model.system_prompt == "你是诸葛亮。"
    assert (Path(model.adapter_path) / "adapter_config.json").is_file()


def test_a_worker_with_two_processes_per_job_trains_under_torchrun_like_one(tmp_path, tiny_model):
    """`kongming worker --nproc 2`: the training runs as 2 CPU processes (gloo) and makes the same updates."""
    from finetune.jobs.worker import Worker

    fid = FileStore(tmp_path).create(messages_jsonl(), "d.jsonl", "fine-tune").id
    losses = []
    for nproc in (1, 2):
        job = create_job(tmp_path, fast_job(tiny_model, fid))
        Worker(tmp_path, poll=0.1, nproc=nproc).run(once=True)
        store = JobStore(tmp_path)
        assert store.get_job(job.id).status == "succeeded"  # type: ignore[union-attr]
        events, _ = store.list_events(job.id, limit=100)
        losses.append({e.data["step"]: e.data["train_loss"] for e in events if e.data and "train_loss" in e.data})
    assert losses[0].keys() == losses[1].keys() == {1, 2, 3, 4}
    assert all(abs(losses[0][s] - losses[1][s]) <= 1e-4 * abs(losses[0][s]) for s in losses[0])


def test_a_training_that_fails_fails_the_job_with_its_reason(tmp_path, tiny_model):
    from finetune.jobs.spec import JobPaths
    from finetune.jobs.worker import Worker

    fid = FileStore(tmp_path).create(messages_jsonl(), "d.jsonl", "fine-tune").id
    job = create_job(tmp_path, fast_job(tiny_model, fid))
    JobPaths.of(tmp_path, job.id).train.write_text("{oops\n", encoding="utf-8")  # spoilt after it was checked
    Worker(tmp_path, poll=0.1).run(once=True)
    failed = JobStore(tmp_path).get_job(job.id)
    assert failed is not None and failed.status == "failed" and failed.fine_tuned_model is None
    assert failed.error is not None and failed.error["code"] == "training_failed"
    assert "no valid conversations" in failed.error["message"] and str(tmp_path) not in failed.error["message"]
    events, _ = JobStore(tmp_path).list_events(job.id)
    assert events[0].level == "error" and events[0].message.startswith("Training failed:")


def test_a_job_left_validating_by_a_dead_api_process_is_failed(tmp_path):
    from finetune.jobs.store import JobRecord
    from finetune.jobs.worker import Worker

    store = JobStore(tmp_path)
    store.add_job(JobRecord("ftjob-old", 1_000, "validating_files", {"model": "m"}))
    store.add_job(JobRecord("ftjob-new", int(time.time()), "validating_files", {"model": "m"}))
    Worker(tmp_path).recover()
    old, new = store.get_job("ftjob-old"), store.get_job("ftjob-new")
    assert old is not None and old.status == "failed" and old.error["code"] == "validation_interrupted"  # type: ignore[index]
    assert new is not None and new.status == "validating_files"  # still being prepared
