"""A job's events from its run: metrics.jsonl lines (train loss per step, validation loss, tokens/s, ETA) and
the evaluation report, in the shape of OpenAI's `fine_tuning.job.event` (type "metrics" with `data`)."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from finetune.jobs.store import JobStore
from finetune.training.runio import METRICS_FILE


class MetricsTail:
    """Reads the lines a training run appends to metrics.jsonl and posts each once as an event.

    A resumed run rewrites the file (it keeps the lines up to its checkpoint): the tail then reads it again from
    the start, and lines already posted (same kind and step, by this or an earlier worker: the job's events say)
    are not posted twice, while lines a killed worker had not posted yet are."""

    def __init__(self, store: JobStore, job_id: str, run_dir: Path, epochs: float, max_steps: int | None) -> None:
        self.store, self.job_id, self.path = store, job_id, run_dir / METRICS_FILE
        self.epochs, self.max_steps = epochs, max_steps
        self.offset, self.inode = 0, -1
        self.posted: set[tuple[str, int]] = set()
        self.started = time.monotonic()
        self.first_step: int | None = None
        self.eta: float | None = None
        earlier, _ = store.list_events(job_id, limit=10**9)
        self.posted = {key for e in earlier if e.data and (key := self._key(e.data))}

    @staticmethod
    def _key(rec: dict[str, Any]) -> tuple[str, int] | None:
        """(kind, step) of a metrics line or of the data of the event posted for one."""
        kind = ("event" if "event" in rec else "val" if "val_loss" in rec or "valid_loss" in rec
                else "train" if "loss" in rec or "train_loss" in rec else None)  # fmt: skip
        return (kind, int(rec.get("step", 0))) if kind else None

    def _read(self) -> list[dict[str, Any]]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return []
        if st.st_ino != self.inode or st.st_size < self.offset:
            self.inode, self.offset = st.st_ino, 0
        with self.path.open("rb") as f:
            f.seek(self.offset)
            chunk = f.read()
        end = chunk.rfind(b"\n") + 1  # a line still being written waits for the next look
        self.offset += end
        records = []
        for line in chunk[:end].decode("utf-8", errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict):
                records.append(rec)
        return records

    def total_steps(self, rec: dict[str, Any]) -> int | None:
        """The run's step count: as the trainer writes it, else train.max_steps, else estimated from the epoch
        progress of a step line."""
        if rec.get("total_steps"):
            return int(rec["total_steps"])
        if self.max_steps:
            return int(self.max_steps)
        epoch = float(rec.get("epoch") or 0)
        return max(int(rec["step"]), math.ceil(rec["step"] / epoch * self.epochs - 1e-6)) if epoch > 0 else None

    def post(self) -> float | None:
        """Post the new lines; returns the seconds left (ETA) by the latest step, None before the first."""
        for rec in self._read():
            key = self._key(rec)
            if key is None or key in self.posted:
                continue
            self.posted.add(key)
            self._post(rec)
        return self.eta

    def _post(self, rec: dict[str, Any]) -> None:
        step = int(rec.get("step", 0))
        if "event" in rec:
            what = rec["event"]
            said = f"Training resumed from the checkpoint of step {step}" if what == "resume" else f"Training: {what}"
            self.store.add_event(self.job_id, said, data={"step": step, "event": what})
            return
        if "val_loss" in rec:
            data = {"step": step, "valid_loss": rec["val_loss"], "valid_perplexity": rec.get("val_ppl")}
            self.store.add_event(self.job_id, f"Step {step}: validation loss={rec['val_loss']:.4f}", type="metrics",
                                 data=data)  # fmt: skip
            return
        total = self.total_steps(rec)
        if self.first_step is None:
            self.first_step, self.started = step - 1, time.monotonic() - float(rec.get("seconds") or 0)
        ran = step - self.first_step
        self.eta = (time.monotonic() - self.started) / ran * max(0, total - step) if total and ran > 0 else None
        if rec.get("eta_s") is not None:  # the trainer's own (evaluations and checkpoints included)
            self.eta = float(rec["eta_s"])
        data = {
            "step": step, "total_steps": total, "train_loss": rec["loss"], "learning_rate": rec.get("lr"),
            "epoch": rec.get("epoch"), "tokens": rec.get("tokens"), "tokens_per_s": rec.get("tokens_per_s"),
            "eta_seconds": round(self.eta, 1) if self.eta is not None else None,
        }  # fmt: skip
        of = f"/{total}" if total else ""
        self.store.add_event(self.job_id, f"Step {step}{of}: training loss={rec['loss']:.4f}", type="metrics",
                             data=data)  # fmt: skip


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def eval_summary(run_dir: Path) -> tuple[str, dict[str, Any]] | None:
    """(a one-line message, the report without server paths) from the run's eval.json, or None without one."""
    path = run_dir / "eval.json"
    if not path.is_file():
        return None
    report = json.loads(path.read_text(encoding="utf-8"))
    report.pop("run", None)
    if report.get("loss_curve"):
        report["loss_curve"] = Path(report["loss_curve"]).name
    if "/" in str(report.get("model", "")):
        report["model"] = Path(report["model"]).name
    tuned = (report.get("val") or {}).get("tuned") or {}
    parts = [f"val loss {tuned['loss']:.4f}, perplexity {tuned['perplexity']:.2f}"] if tuned else []
    c = report.get("classification")
    if c:
        def acc(name: str) -> str:
            m = c.get(name) or {}
            return f"{_pct(m['accuracy'])} / {m['macro_f1']:.3f}" if m else "n/a"

        parts.append(f"accuracy / macro F1 on {c.get('test_rows')} held-out rows: tuned {acc('tuned')}, "
                     f"majority {acc('majority')}, TF-IDF {acc('tfidf_logreg')}")  # fmt: skip
    g = (report.get("generation") or {}).get("tuned")
    if g:
        parts.append(f"BLEU {g['bleu']:.2f}, ROUGE-L {g['rouge_l']:.3f}, style {g['style']['score']:.3f}")
    return "Evaluation: " + "; ".join(parts), report
