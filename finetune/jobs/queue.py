"""Jobs as the API sees them: create (check files and settings, convert the data, queue), cancel, checkpoints."""

from __future__ import annotations

import logging
import secrets
from pathlib import Path
from typing import Any

from finetune.jobs.files import FileStore
from finetune.jobs.spec import JobPaths, SpecError, build_config, model_name, resolve_hyperparameters, write_config
from finetune.jobs.store import FINAL, JobRecord, JobStore, new_id, now

log = logging.getLogger(__name__)


class JobStateError(ValueError):
    """An action the job's state does not allow (cancelling a finished job)."""


def _data_file(files: FileStore, file_id: str | None, param: str) -> Path | None:
    if file_id is None:
        return None
    record = files.store.get_file(file_id)
    if record is None or not files.path(file_id).is_file():
        raise SpecError(f"{param}: no file with id {file_id!r}: upload it with POST /v1/files first", param)
    if record.purpose != "fine-tune":
        raise SpecError(f"{param}: file {file_id} has purpose {record.purpose!r}, not 'fine-tune'", param)
    return files.path(file_id)


def create_job(data_dir: str | Path, request: dict[str, Any]) -> JobRecord:
    """Check a job request, convert its files into the job's folder, write its training config and queue it.

    `request`: model (as the client named it), base (what `finetune train` loads: a folder, a hub id or
    gemma-3-270m), training_file, validation_file, hyperparameters, suffix, seed, kongming (extension).
    SpecError (with the request field as `param`) when it cannot run; nothing is stored then."""
    from finetune.data.formats import read, write

    files = FileStore(data_dir)
    store = files.store
    train_path = _data_file(files, request["training_file"], "training_file")
    val_path = _data_file(files, request.get("validation_file"), "validation_file")
    assert train_path is not None
    train, _ = read(train_path)
    if not train:
        raise SpecError("training_file: no valid record", "training_file")
    val = read(val_path)[0] if val_path else None
    job_id = new_id("ftjob")
    paths = JobPaths.of(data_dir, job_id)
    checked = {**request, "hyperparameters": resolve_hyperparameters(request.get("hyperparameters") or {}, len(train)),
               "seed": request.get("seed") if request.get("seed") is not None else secrets.randbelow(2**31)}
    cfg = build_config(checked, paths, has_val=bool(val))  # SpecError before anything is written
    _check_target_modules(cfg, Path(data_dir) / "models")
    details = store.get_file(request["training_file"])
    checked["system_prompt"] = details.details.get("system_prompt") if details else None
    checked["task"] = cfg.task
    lora = cfg.lora  # the job object shows the LoRA values it trains with, those it was sent or the defaults
    checked["kongming"] = {**(checked.get("kongming") or {}), "lora": {
        "r": lora.r, "alpha": lora.alpha, "dropout": lora.dropout, "target_modules": list(lora.target_modules)}}
    checked["fine_tuned_model"] = model_name(request["model"], request.get("suffix"), job_id)
    job = JobRecord(job_id, now(), "validating_files", checked)
    store.add_job(job)
    store.add_event(job_id, f"Validating training file: {request['training_file']}")
    paths.root.mkdir(parents=True, exist_ok=True)
    write(paths.train, train, "openai")
    if val:
        write(paths.val, val, "openai")
    write_config(cfg, paths, job_id)
    store.update_job(job_id, status="queued", only_if=("validating_files",))
    store.add_event(job_id, f"Files validated ({len(train)} training records), moving job to queued state")
    return store.get_job(job_id) or job


def _check_target_modules(cfg: Any, cache_dir: Path) -> None:
    """SpecError when the LoRA target modules are not linear layers of the base model (a folder's or gemma-3-270m's
    config; a hub id, still to be downloaded, is checked when the job trains)."""
    from finetune.models.base import config_lora_targets, model_config
    from finetune.training.train import missing_modules

    config = model_config(cfg.model, cfg.model_cache_dir or cache_dir)
    problem = missing_modules(cfg.lora.target_modules, config_lora_targets(config)) if config is not None else None
    if problem:
        raise SpecError(f"kongming.lora.target_modules: {problem}", "kongming.lora.target_modules")


def cancel_job(store: JobStore, job_id: str) -> JobRecord:
    """Cancel a job: at once when it waits; a running one is flagged and its worker stops it within seconds.
    KeyError: no such job. JobStateError: it has already finished."""
    job = store.get_job(job_id)
    if job is None:
        raise KeyError(job_id)
    if job.status in FINAL:
        raise JobStateError(f"job {job_id} is already {job.status}: only a waiting or running job can be cancelled")
    if store.update_job(job_id, status="cancelled", finished_at=now(), only_if=("validating_files", "queued")):
        store.add_event(job_id, "Job cancelled before it started")
    elif store.update_job(job_id, cancel_requested=1, only_if=("running",)):
        store.add_event(job_id, "Cancellation requested: stopping training")
    return store.get_job(job_id) or job


def checkpoints(data_dir: str | Path, job: JobRecord) -> list[dict[str, Any]]:
    """The job's complete checkpoints, newest first: {id, step, path, created_at, metrics{step, train_loss,
    valid_loss}} (losses from metrics.jsonl at that step)."""
    from finetune.training.runio import checkpoints as found
    from finetune.training.runio import read_metrics

    run = JobPaths.of(data_dir, job.id).run
    records = read_metrics(run)
    out = []
    for step, path in reversed(found(run)):
        train = next((r["loss"] for r in reversed(records) if r.get("step") == step and "loss" in r), None)
        val = next((r["val_loss"] for r in reversed(records) if r.get("step") == step and "val_loss" in r), None)
        out.append({"id": f"ftckpt-{job.id.removeprefix('ftjob-')}-{step}", "step": step, "path": str(path),
                    "created_at": int(path.stat().st_mtime),
                    "metrics": {"step": step, "train_loss": train, "valid_loss": val}})  # fmt: skip
    return out
