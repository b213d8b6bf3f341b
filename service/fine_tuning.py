"""OpenAI Files and Fine-tuning jobs wire models: the job request (validates itself), file/job/event/checkpoint
objects and their lists, built from finetune.jobs' records."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from finetune.jobs.store import EventRecord, FileRecord, JobRecord

from .protocol import OpenAIRequest

Auto = Literal["auto"]
# What a job may ask for: more holds no machine's memory or time (a typo of 1e11 is refused, not queued)
MAX_BATCH_SIZE, MAX_EPOCHS, MAX_LR_MULTIPLIER = 256, 100, 100.0


class Hyperparameters(BaseModel):
    """OpenAI's supervised hyperparameters; "auto" lets the service pick (docs/jobs.md says how)."""

    model_config = ConfigDict(extra="forbid")
    n_epochs: Auto | Annotated[int, Field(strict=True, ge=1, le=MAX_EPOCHS)] | None = Field(
        default=None, description=f"passes over the training data, 1 to {MAX_EPOCHS}")
    batch_size: Auto | Annotated[int, Field(strict=True, ge=1, le=MAX_BATCH_SIZE)] | None = Field(
        default=None, description=f"sequences per micro-batch, 1 to {MAX_BATCH_SIZE}")
    learning_rate_multiplier: Auto | Annotated[float, Field(gt=0, le=MAX_LR_MULTIPLIER)] | None = Field(
        default=None, description=f"times finetune's 2e-4, above 0 and at most {MAX_LR_MULTIPLIER}")


class Supervised(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)


class Method(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["supervised"] = Field(description="only supervised (LoRA) fine-tuning is offered")
    supervised: Supervised | None = None


class KongmingJobOptions(BaseModel):
    """The extension: the task and finetune's own config sections (LoRA rank/alpha/dropout/target_modules,
    training, data and evaluation keys, as in finetune/configs/*.yaml)."""

    model_config = ConfigDict(extra="forbid")
    task: Literal["chat", "classify"] = "chat"
    lora: dict[str, Any] = Field(default_factory=dict, description="r, alpha, dropout, target_modules")
    train: dict[str, Any] = Field(default_factory=dict, description="e.g. max_steps, max_seq_len, eval_every")
    data: dict[str, Any] = Field(default_factory=dict, description="val_split, system, labels, prompt, ...")
    eval: dict[str, Any] = Field(default_factory=dict, description="max_samples, compare_base, ...")


class JobCreateRequest(OpenAIRequest):
    """POST /v1/fine_tuning/jobs. `hyperparameters` (deprecated by OpenAI) and `method.supervised.hyperparameters`
    are both accepted; the method's win."""

    model: str = Field(min_length=1)
    training_file: str = Field(min_length=1)
    validation_file: str | None = None
    hyperparameters: Hyperparameters | None = None
    method: Method | None = None
    suffix: str | None = Field(default=None, max_length=64, pattern=r"^[A-Za-z0-9._-]*$")
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)
    metadata: dict[str, str] | None = None
    integrations: list[Any] | None = Field(default=None, max_length=0, description="none are offered")
    kongming: KongmingJobOptions = Field(default_factory=KongmingJobOptions)

    def chosen_hyperparameters(self) -> dict[str, Any]:
        sup = self.method.supervised if self.method and self.method.supervised else None
        hp = sup.hyperparameters if sup else self.hyperparameters or Hyperparameters()
        return hp.model_dump(exclude_none=True)

    def to_job(self, base: str) -> dict[str, Any]:
        """The request as finetune.jobs.queue.create_job takes it (`base`: what `finetune train` loads)."""
        return {
            "model": self.model, "base": base, "training_file": self.training_file,
            "validation_file": self.validation_file, "hyperparameters": self.chosen_hyperparameters(),
            "suffix": self.suffix, "seed": self.seed, "metadata": self.metadata,
            "kongming": self.kongming.model_dump(exclude_defaults=False),
        }  # fmt: skip


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: str
    status_details: str | None = None
    expires_at: int | None = None
    kongming: dict[str, Any] | None = None  # format, records, skipped, problems [{line, index, message}]

    @classmethod
    def of(cls, f: FileRecord) -> FileObject:
        ext = {k: v for k, v in f.details.items() if k != "system_prompt"} or None
        return cls(id=f.id, bytes=f.bytes, created_at=f.created_at, filename=f.filename, purpose=f.purpose,
                   status=f.status, status_details=f.status_details, kongming=ext)  # fmt: skip


class ListPage(BaseModel):
    object: Literal["list"] = "list"
    data: list[Any]
    has_more: bool = False
    first_id: str | None = None
    last_id: str | None = None

    @classmethod
    def of(cls, items: list[Any], has_more: bool) -> ListPage:
        ids = [i.id for i in items]
        return cls(data=items, has_more=has_more, first_id=ids[0] if ids else None, last_id=ids[-1] if ids else None)


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool = True


class JobError(BaseModel):
    code: str
    message: str
    param: str | None = None


class FineTuningJob(BaseModel):
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    error: JobError | None = None
    fine_tuned_model: str | None = None
    finished_at: int | None = None
    hyperparameters: dict[str, Any]
    model: str
    organization_id: str = "org-kongming"
    result_files: list[str] = Field(default_factory=list)
    seed: int
    status: str
    trained_tokens: int | None = None
    training_file: str
    validation_file: str | None = None
    estimated_finish: int | None = None
    integrations: list[Any] | None = None
    metadata: dict[str, str] | None = None
    method: dict[str, Any]
    kongming: dict[str, Any]  # task, lora/train/data/eval options, the suffix

    @classmethod
    def of(cls, j: JobRecord) -> FineTuningJob:
        r = j.request
        hp = r["hyperparameters"]
        return cls(
            id=j.id, created_at=j.created_at, error=JobError(**j.error) if j.error else None,
            fine_tuned_model=j.fine_tuned_model, finished_at=j.finished_at, hyperparameters=hp, model=r["model"],
            result_files=j.result_files, seed=r["seed"], status=j.status, trained_tokens=j.trained_tokens,
            training_file=r["training_file"], validation_file=r.get("validation_file"),
            estimated_finish=j.estimated_finish if j.status == "running" else None, metadata=r.get("metadata"),
            method={"type": "supervised", "supervised": {"hyperparameters": hp}},
            kongming={**(r.get("kongming") or {}), "suffix": r.get("suffix")},
        )  # fmt: skip


class JobEvent(BaseModel):
    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: str
    message: str
    type: str
    data: dict[str, Any] | None = None

    @classmethod
    def of(cls, e: EventRecord) -> JobEvent:
        return cls(id=e.id, created_at=e.created_at, level=e.level, message=e.message, type=e.type, data=e.data)


class CheckpointMetrics(BaseModel):
    step: float | None = None
    train_loss: float | None = None
    valid_loss: float | None = None


class JobCheckpoint(BaseModel):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: CheckpointMetrics
    step_number: int

    @classmethod
    def of(cls, job: JobRecord, c: dict[str, Any]) -> JobCheckpoint:
        name = f"{job.request['fine_tuned_model']}:ckpt-step-{c['step']}"
        return cls(id=c["id"], created_at=c["created_at"], fine_tuned_model_checkpoint=name, step_number=c["step"],
                   fine_tuning_job_id=job.id, metrics=CheckpointMetrics(**c["metrics"]))
