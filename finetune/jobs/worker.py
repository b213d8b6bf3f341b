"""The job worker: takes queued jobs one at a time per machine and runs `finetune train` then `finetune eval` in
their own process group, posts metrics.jsonl as events, takes over jobs whose worker died (they resume from their
last checkpoint), stops a cancelled job within seconds and registers the trained model."""

from __future__ import annotations

import argparse
import contextlib
import csv
import fcntl
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from finetune.jobs.events import MetricsTail, eval_summary
from finetune.jobs.files import FileStore
from finetune.jobs.spec import JobPaths
from finetune.jobs.store import DB_FILE, JobRecord, JobStore, now, worker_name

log = logging.getLogger(__name__)
POLL_S = 0.5  # how often a running job's cancel flag, metrics and heartbeat are looked at
STALE_S = 60.0  # a running job whose worker has not beaten for this long is taken over
KILL_GRACE_S = 5.0
# `finetune ARGS` in a fresh interpreter (the package has no __main__; the console script may not be on PATH)
FINETUNE_MAIN = "import sys; from finetune.cli import main; sys.exit(main())"
_ABS_PATH = re.compile(r"(?<![\w.~])/(?:[^\s/'\"(),:;]+/)+(?=[^\s/'\"(),:;]+)")


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_group(pid: int | None) -> None:
    """SIGTERM the process group led by `pid`, SIGKILL what is left after the grace period."""
    if not pid:
        return
    for sig, wait in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, 0.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and _alive(pid):
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0]:
                    return
            time.sleep(0.05)


class Worker:
    """Runs the jobs of `data_dir` (its `finetune/jobs.sqlite3`), one at a time, while it holds this machine's
    worker lock (a second worker on the same machine waits: one training at a time per machine)."""

    def __init__(self, data_dir: str | Path, poll: float = 1.0, parent_pid: int | None = None, nproc: int = 1) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.nproc = nproc  # processes per training (torchrun, DDP) when > 1
        self.store = JobStore(self.data_dir)
        self.files = FileStore(self.data_dir, self.store)
        self.name = worker_name()
        self.host = self.name.rsplit(":", 1)[0]
        self.poll = poll
        self.parent_pid = parent_pid
        self.stopping = threading.Event()
        self._lock: IO[bytes] | None = None

    # -- the loop ----------------------------------------------------------------------------------------------
    def run(self, once: bool = False) -> None:
        """Work until stopped (SIGTERM/SIGINT, `stopping`, or the parent process gone); `once`: until no job waits."""
        log.info("worker %s on %s", self.name, self.data_dir)
        try:
            while not self._should_stop():
                if not self._hold_lock():
                    time.sleep(self.poll)
                    continue
                self.recover()
                job = self.store.claim_next(self.name)
                if job is not None:
                    self.run_job(job)
                elif once:
                    return
                else:
                    self.stopping.wait(self.poll)
        finally:
            if self._lock is not None:
                self._lock.close()

    def _should_stop(self) -> bool:
        if self.parent_pid and os.getppid() != self.parent_pid:
            self.stopping.set()  # started by a service that is gone: do not outlive it
        return self.stopping.is_set()

    def _hold_lock(self) -> bool:
        if self._lock is not None:
            return True
        f = (self.data_dir / "finetune" / f"worker.{self.host}.lock").open("ab")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            return False
        self._lock = f
        return True

    def recover(self) -> None:
        """Requeue running jobs whose worker is gone (this host: its process is dead; any host: no heartbeat for
        STALE_S), killing a training it left behind on this host; they resume from their last checkpoint. A job
        left `validating_files` by an API process that died while creating it is failed."""
        for job in self.store.jobs_with_status("validating_files"):
            if time.time() - job.created_at > STALE_S * 10:
                said = "the service stopped while it was preparing this job's files: create it again"
                error = {"code": "validation_interrupted", "message": said, "param": None}
                if self.store.update_job(job.id, status="failed", finished_at=now(), error=error,
                                         only_if=("validating_files",)):  # fmt: skip
                    self.store.add_event(job.id, said, level="error")
        for job in self.store.jobs_with_status("running"):
            host, _, pid = (job.worker or ":").rpartition(":")
            here = host == self.host
            dead = (here and not _alive(int(pid or 0))) or time.time() - (job.heartbeat or 0) > STALE_S
            if job.worker == self.name or not dead:
                continue
            if here:
                _kill_group(job.trainer_pid)
            if job.cancel_requested:
                if self.store.update_job(job.id, status="cancelled", finished_at=now(), only_if=("running",)):
                    self.store.add_event(job.id, "Job cancelled (its worker had stopped)")
                continue
            if self.store.update_job(job.id, status="queued", worker=None, trainer_pid=None, only_if=("running",)):
                self.store.add_event(job.id, f"The worker running this job stopped ({job.worker}); the job is "
                                             "queued again and resumes from its last checkpoint", level="warn")

    # -- one job -----------------------------------------------------------------------------------------------
    def run_job(self, job: JobRecord) -> str:
        """Train, evaluate, publish. Returns the job's status afterwards."""
        from finetune.training.runio import checkpoints

        paths = JobPaths.of(self.data_dir, job.id)
        done = checkpoints(paths.run)
        started = f"resumed from step {done[-1][0]}" if done else "started"
        self.store.add_event(job.id, f"Fine-tuning job {started} by worker {self.name}")
        hp = job.request["hyperparameters"]
        steps = (job.request.get("kongming") or {}).get("train", {}).get("max_steps")
        tail = MetricsTail(self.store, job.id, paths.run, float(hp["n_epochs"]), steps)
        outcome = self._run(job, ["train", str(paths.config)], paths, tail)
        if outcome != "ok":
            return self._stopped(job, outcome, paths)
        self.store.add_event(job.id, "Training finished; evaluating the model on the held-out data")
        outcome = self._run(job, ["eval", str(paths.run)], paths, None)
        if outcome in ("cancelled", "stopped"):
            return self._stopped(job, outcome, paths)
        if outcome == "failed":
            self.store.add_event(job.id, f"Evaluation failed: {self._last_error(paths)}", level="warn")
        return self._publish(job, paths)

    def _run(self, job: JobRecord, args: list[str], paths: JobPaths, tail: MetricsTail | None) -> str:
        """Run `finetune ARGS` in its own session; "ok", "failed", "cancelled" (the job was) or "stopped" (the
        worker was asked to stop)."""
        env = {**os.environ, "KONGMING_DATA_DIR": str(self.data_dir), "PYTHONUNBUFFERED": "1"}
        with paths.log.open("ab") as out:
            out.write(f"\n$ finetune {' '.join(args)}\n".encode())
            out.flush()
            proc = subprocess.Popen(self._command(args), stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True, env=env,
                                    cwd=paths.root)  # fmt: skip
        self.store.update_job(job.id, trainer_pid=proc.pid, heartbeat=time.time())
        while True:
            try:
                rc = proc.wait(timeout=POLL_S)
                break
            except subprocess.TimeoutExpired:
                pass
            eta = tail.post() if tail else None
            finish = now() + int(eta) if eta is not None else None
            self.store.update_job(job.id, heartbeat=time.time(), estimated_finish=finish)
            current = self.store.get_job(job.id)
            if self._should_stop() or current is None or current.cancel_requested:
                _kill_group(proc.pid)
                proc.wait()
                return "stopped" if self.stopping.is_set() else "cancelled"
        if tail:
            tail.post()
        return "ok" if rc == 0 else "failed"

    def _command(self, args: list[str]) -> list[str]:
        """`finetune ARGS` in a fresh interpreter; training under torchrun when the worker has several processes
        per job (the whole group is one session: cancel stops every rank)."""
        if args[0] == "train" and self.nproc > 1:
            return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={self.nproc}",
                    "-m", "finetune.cli", *args]  # fmt: skip
        return [sys.executable, "-c", FINETUNE_MAIN, *args]

    def _stopped(self, job: JobRecord, outcome: str, paths: JobPaths) -> str:
        from finetune.training.runio import tidy

        tidy(paths.run) if paths.run.is_dir() else None  # what the killed writer left: temporary files
        if outcome == "stopped":
            self.store.update_job(job.id, status="queued", worker=None, trainer_pid=None, estimated_finish=None,
                                  only_if=("running",))  # fmt: skip
            self.store.add_event(job.id, "Worker stopped; the job is queued again and resumes from its last "
                                         "checkpoint", level="warn")  # fmt: skip
            return "queued"
        if outcome == "cancelled":
            self.store.update_job(job.id, status="cancelled", finished_at=now(), estimated_finish=None,
                                  trainer_pid=None)  # fmt: skip
            self.store.add_event(job.id, "Job cancelled: training stopped, no model was published")
            return "cancelled"
        message = self._last_error(paths)
        error = {"code": "training_failed", "message": message, "param": None}
        self.store.update_job(job.id, status="failed", finished_at=now(), error=error, estimated_finish=None,
                              trainer_pid=None)  # fmt: skip
        self.store.add_event(job.id, f"Training failed: {message}", level="error")
        return "failed"

    def _last_error(self, paths: JobPaths) -> str:
        """The trainer's `error: ...` line (else its last line), without server folders."""
        try:
            lines = [ln.strip() for ln in paths.log.read_text(encoding="utf-8", errors="replace").splitlines()]
        except OSError:
            return "the training process failed (no log)"
        lines = [ln for ln in lines if ln and not ln.startswith("$ ")]
        errors = [ln for ln in lines if ln.startswith("error:") or "Error" in ln.split(":")[0]]
        text = (errors or lines or ["the training process failed"])[-1].removeprefix("error: ")
        return _ABS_PATH.sub("", text)[:1000]

    # -- success -----------------------------------------------------------------------------------------------
    def _publish(self, job: JobRecord, paths: JobPaths) -> str:
        """Result files, evaluation events, the model in the registry, then the job succeeded (in that order:
        a client that sees `succeeded` can chat with the model at once)."""
        from finetune.jobs.registry import FineTunedModel, ModelRegistry
        from finetune.training.runio import SUMMARY_FILE

        summary = json.loads((paths.run / SUMMARY_FILE).read_text(encoding="utf-8"))
        results = []
        if _write_metrics_csv(paths):
            results.append(self.files.add_result(paths.root / "step_metrics.csv", "step_metrics.csv", job.id).id)
        if (paths.run / "loss_curve.png").is_file():
            results.append(self.files.add_result(paths.run / "loss_curve.png", "loss_curve.png", job.id).id)
        report = eval_summary(paths.run)
        if report is not None:
            message, data = report
            (paths.root / "eval.json").write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")
            results.append(self.files.add_result(paths.root / "eval.json", "eval.json", job.id).id)
            self.store.add_event(job.id, message, type="metrics", data=data)
        model_id = job.request["fine_tuned_model"]
        ModelRegistry(self.data_dir).add(FineTunedModel(
            id=model_id, base_model=job.request["base"], adapter_path=str(paths.run), job_id=job.id,
            task=job.request.get("task", "chat"), created_at=now(), system_prompt=job.request.get("system_prompt"),
        ))  # fmt: skip
        self.store.update_job(job.id, status="succeeded", finished_at=now(), fine_tuned_model=model_id,
                              trained_tokens=int(summary.get("tokens") or 0), estimated_finish=None,
                              result_files=results, trainer_pid=None)  # fmt: skip
        self.store.add_event(job.id, f"New fine-tuned model created: {model_id}")
        self.store.add_event(job.id, "The job has successfully completed")
        return "succeeded"


def _write_metrics_csv(paths: JobPaths) -> bool:
    """step_metrics.csv: one row per step (train loss, learning rate, tokens/s) with the validation loss where
    one was computed."""
    from finetune.training.runio import read_metrics

    rows: dict[int, dict[str, Any]] = {}
    for r in read_metrics(paths.run):
        if "step" not in r or "event" in r:
            continue
        row = rows.setdefault(int(r["step"]), {"step": int(r["step"])})
        if "loss" in r:
            row.update(train_loss=r["loss"], learning_rate=r.get("lr"), epoch=r.get("epoch"),
                       tokens=r.get("tokens"), tokens_per_s=r.get("tokens_per_s"))  # fmt: skip
        if "val_loss" in r:
            row.update(valid_loss=r["val_loss"], valid_perplexity=r.get("val_ppl"))
    if not rows:
        return False
    fields = ["step", "train_loss", "valid_loss", "valid_perplexity", "learning_rate", "epoch", "tokens",
              "tokens_per_s"]  # fmt: skip
    with (paths.root / "step_metrics.csv").open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows[s] for s in sorted(rows))
    return True


def run_worker(
    data_dir: str | Path, poll: float = 1.0, once: bool = False, parent_pid: int | None = None, nproc: int = 1
) -> None:
    """Run a worker in this process until SIGTERM/SIGINT (the job in progress is requeued and resumes from its
    checkpoint when a worker starts again). `nproc` > 1 trains each job under torchrun with that many processes."""
    worker = Worker(data_dir, poll, parent_pid, nproc)

    def stop(signum: int, frame: Any) -> None:
        worker.stopping.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
    worker.run(once)


class WorkerProcess:
    """A worker in a child process, as `kongming serve` runs one: started on demand, stopped with the service
    (and it exits by itself when the service is gone)."""

    def __init__(self, data_dir: str | Path) -> None:
        self.data_dir = Path(data_dir)
        self.proc: subprocess.Popen[bytes] | None = None
        self._guard = threading.Lock()

    def ensure_running(self) -> None:
        with self._guard:
            if self.proc is not None and self.proc.poll() is None:
                return
            self.data_dir.joinpath("finetune").mkdir(parents=True, exist_ok=True)
            out = (self.data_dir / "finetune" / "worker.log").open("ab")
            cmd = [sys.executable, "-m", "finetune.jobs.worker", "--data-dir", str(self.data_dir.resolve()),
                   "--parent-pid", str(os.getpid())]  # fmt: skip
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            out.close()
            log.info("started a fine-tuning worker (pid %d)", self.proc.pid)

    def start_if_jobs_wait(self) -> None:
        """Start the worker when the data folder holds queued jobs or jobs a dead worker left running."""
        db = self.data_dir / "finetune" / DB_FILE
        if db.is_file() and JobStore(self.data_dir).jobs_with_status("queued", "running"):
            self.ensure_running()

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM: the worker stops its training (requeued, resumed later) and exits; SIGKILL after `timeout`."""
        with self._guard:
            proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m finetune.jobs.worker", description="Run fine-tuning jobs.")
    p.add_argument("--data-dir", type=Path, default=Path(os.environ.get("KONGMING_DATA_DIR", "data")))
    p.add_argument("--poll", type=float, default=1.0, help="seconds between looks at the queue")
    p.add_argument("--once", action="store_true", help="exit when no job is waiting")
    p.add_argument("--parent-pid", type=int, help="exit when this process (the service) is gone")
    p.add_argument("--nproc", type=int, default=1, help="processes per training (torchrun, DDP; default 1)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    run_worker(args.data_dir, args.poll, args.once, args.parent_pid, args.nproc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
