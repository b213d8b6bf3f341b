"""Jobs survive their worker: killed (-9) mid-training, or stopped with the service, the job is taken up again and
resumes from its last checkpoint instead of starting over."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from finetune.jobs.files import FileStore
from finetune.jobs.queue import create_job
from finetune.jobs.spec import JobPaths
from finetune.jobs.store import JobStore

from .test_jobs import fast_job, messages_jsonl


def long_job(tmp_path: Path, tiny_model: Path) -> str:
    fid = FileStore(tmp_path).create(messages_jsonl(), "d.jsonl", "fine-tune").id
    request = fast_job(tiny_model, fid)
    request["kongming"]["train"].update(max_steps=40, save_every=2, eval_every=50)
    return create_job(tmp_path, request).id


def wait_for_checkpoint(tmp_path: Path, job_id: str, timeout: float = 120.0) -> None:
    ckpts = JobPaths.of(tmp_path, job_id).run / "checkpoints"
    deadline = time.monotonic() + timeout
    while not list(ckpts.glob("step-*/state.json")):
        assert time.monotonic() < deadline, "no checkpoint was written"
        time.sleep(0.1)


def messages(store: JobStore, job_id: str) -> list[str]:
    return [e.message for e in reversed(store.list_events(job_id, limit=1000)[0])]


def test_a_job_whose_worker_was_killed_resumes_from_its_checkpoint(tmp_path, tiny_model):
    from finetune.jobs.worker import Worker

    job_id = long_job(tmp_path, tiny_model)
    worker = subprocess.Popen([sys.executable, "-m", "finetune.jobs.worker", "--data-dir", str(tmp_path),
                               "--poll", "0.2"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_for_checkpoint(tmp_path, job_id)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    store = JobStore(tmp_path)
    left = store.get_job(job_id)
    assert left is not None and left.status == "running" and left.trainer_pid
    orphan = left.trainer_pid  # the training goes on without its worker until the next worker takes the job

    Worker(tmp_path, poll=0.1).run(once=True)
    with_pid = subprocess.run(["ps", "-p", str(orphan)], capture_output=True)
    assert with_pid.returncode != 0, "the orphaned training was not stopped"
    done = store.get_job(job_id)
    said = messages(store, job_id)
    assert done is not None and done.status == "succeeded", said
    assert any("stopped" in m and "queued again" in m for m in said)
    resumed = [m for m in said if m.startswith("Training resumed from the checkpoint of step")]
    assert resumed and int(resumed[-1].rsplit(" ", 1)[-1]) >= 2
    steps = {e.data["step"] for e in store.list_events(job_id, limit=1000)[0] if e.data and "train_loss" in e.data}
    assert steps == set(range(1, 41))


def test_a_job_stopped_with_the_service_is_queued_and_resumed_at_the_next_start(tmp_path, tiny_model):
    from finetune.jobs.worker import WorkerProcess

    job_id = long_job(tmp_path, tiny_model)
    first = WorkerProcess(tmp_path)
    first.start_if_jobs_wait()
    try:
        wait_for_checkpoint(tmp_path, job_id)
    finally:
        first.stop()
    store = JobStore(tmp_path)
    job = store.get_job(job_id)
    assert job is not None and job.status == "queued" and job.worker is None
    second = WorkerProcess(tmp_path)
    second.start_if_jobs_wait()
    try:
        deadline = time.monotonic() + 180
        while (job := store.get_job(job_id)) is not None and job.status in ("queued", "running"):
            assert time.monotonic() < deadline, messages(store, job_id)
            time.sleep(0.3)
    finally:
        second.stop()
    said = messages(store, job_id)
    assert job is not None and job.status == "succeeded", said
    assert any(m.startswith("Worker stopped; the job is queued again") for m in said)
    assert any(m.startswith("Fine-tuning job resumed from step") for m in said)
