"""/v1/fine_tuning/jobs: OpenAI's Fine-tuning jobs API over finetune.jobs (create, list, get, cancel, events,
checkpoints); a job runs in a worker process, never here. Needs an API key."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from finetune.jobs.queue import JobStateError, cancel_job, checkpoints, create_job
from finetune.jobs.spec import SpecError
from finetune.jobs.store import JobRecord, JobStore

from ..errors import BadRequest, NotFound
from ..fine_tuning import FineTuningJob, JobCheckpoint, JobCreateRequest, JobEvent, ListPage
from ..settings import ServiceSettings
from .deps import KbKey, Settings

router = APIRouter(prefix="/v1/fine_tuning/jobs", tags=["fine-tuning"])
Limit = Annotated[int, Query(ge=1, le=1000)]


def _job(store: JobStore, job_id: str) -> JobRecord:
    job = store.get_job(job_id)
    if job is None:
        raise NotFound(f"No such fine-tuning job: {job_id}", param="fine_tuning_job_id", code="job_not_found")
    return job


def base_for(settings: ServiceSettings, model: str) -> str:
    """What `finetune train` loads for the base a client names: a configured base (finetune_bases), or the
    offline default gemma-3-270m. BadRequest for anything else: clients never point the server at a folder."""
    from finetune.models.base import DEFAULT_MODEL

    bases = {DEFAULT_MODEL: DEFAULT_MODEL, **settings.finetune_bases}
    if model not in bases:
        names = ", ".join(sorted(bases))
        raise BadRequest(f"model {model!r} cannot be fine-tuned here: choose one of {names} (more through the "
                         "finetune_bases setting)", param="model", code="model_not_available")  # fmt: skip
    return bases[model]


@router.post("", dependencies=[KbKey])
def create(body: JobCreateRequest, settings: Settings, request: Request) -> FineTuningJob:
    """Check the request and its files, convert the data into the job's folder and queue it; the worker (started
    on demand by `kongming serve`, or `kongming worker`) runs it."""
    try:
        job = create_job(settings.data_dir, body.to_job(base_for(settings, body.model)))
    except SpecError as exc:
        raise BadRequest(str(exc), param=exc.param, code="invalid_request") from None
    worker = getattr(request.app.state, "jobs_worker", None)
    if worker is not None:
        worker.ensure_running()
    return FineTuningJob.of(job)


@router.get("", dependencies=[KbKey])
def list_jobs(settings: Settings, after: str | None = None, limit: Limit = 20) -> ListPage:
    jobs, more = JobStore(settings.data_dir).list_jobs(after, limit)
    return ListPage.of([FineTuningJob.of(j) for j in jobs], more)


@router.get("/{job_id}", dependencies=[KbKey])
def retrieve(job_id: str, settings: Settings) -> FineTuningJob:
    return FineTuningJob.of(_job(JobStore(settings.data_dir), job_id))


@router.post("/{job_id}/cancel", dependencies=[KbKey])
def cancel(job_id: str, settings: Settings) -> FineTuningJob:
    """A waiting job is cancelled at once; a running one a moment later, when its worker has stopped training
    (the job shows `cancelled` then; until then it is `running`)."""
    store = JobStore(settings.data_dir)
    _job(store, job_id)
    try:
        return FineTuningJob.of(cancel_job(store, job_id))
    except JobStateError as exc:
        raise BadRequest(str(exc), param="fine_tuning_job_id", code="invalid_job_state") from None


@router.get("/{job_id}/events", dependencies=[KbKey])
def events(job_id: str, settings: Settings, after: str | None = None, limit: Limit = 20) -> ListPage:
    """Newest first: messages, and `metrics` events whose data holds the step's train loss, learning rate,
    tokens/s and ETA (or a validation loss, or the evaluation)."""
    store = JobStore(settings.data_dir)
    _job(store, job_id)
    found, more = store.list_events(job_id, after, limit)
    return ListPage.of([JobEvent.of(e) for e in found], more)


@router.get("/{job_id}/checkpoints", dependencies=[KbKey])
def list_checkpoints(job_id: str, settings: Settings, after: str | None = None, limit: Limit = 10) -> ListPage:
    job = _job(JobStore(settings.data_dir), job_id)
    found = [JobCheckpoint.of(job, c) for c in checkpoints(settings.data_dir, job)]
    if after:
        ids = [c.id for c in found]
        found = found[ids.index(after) + 1:] if after in ids else []
    return ListPage.of(found[:limit], len(found) > limit)
