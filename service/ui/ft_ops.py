"""What the Fine-tune tab does, in process: the same calls as /v1/files and /v1/fine_tuning/jobs (data sets checked
into files, jobs created, read and cancelled), plus the views the page draws (preview, loss points, evaluation)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetune.jobs.files import FileRejected, FileStore
from finetune.jobs.store import FileRecord, JobRecord, JobStore

from ..settings import ServiceSettings

PREVIEW_ROWS = 5
PREVIEW_CHARS = 160
EVAL_SECTIONS = ("val", "generation", "classification")
# What each evaluation number is measured on, shown beside it: BLEU is 0-100 (sacrebleu), ROUGE-L and the shares 0-1.
EVAL_SCALES = {
    "loss": "nats per token, lower is better", "perplexity": "≥ 1, lower is better",
    "bleu": "0-100, higher is closer to the references", "rouge_l": "0-1, higher is closer to the references",
    "style score": "0-1, share of persona markers", "style_raw score": "0-1, share of persona markers",
    "mean_chars": "characters per answer", "loop_rate": "0-1, share of answers that loop",
    "copied_share": "0-1, share copied from the prompt", "accuracy": "0-1", "macro_precision": "0-1",
    "macro_recall": "0-1", "macro_f1": "0-1", "n": "test records",
}  # fmt: skip


class ConsoleError(ValueError):
    """A console action that cannot be done; the message says why and what to change."""


@dataclass
class CsvOptions:
    """How a labelled CSV becomes chat records (finetune/data/labelled.py): columns, label names, system prompt."""

    labels: str = "0=差评,1=好评"
    system: str = ""
    text_column: str = "review"
    label_column: str = "label"
    prompt: str = "{text}"


def dataset_paths(settings: ServiceSettings) -> dict[str, Path]:
    """The configured data sets the tab offers (settings.finetune_datasets; relative paths under the data
    folder), those whose file exists."""
    found = {}
    for name, path in settings.finetune_datasets.items():
        full = path if path.is_absolute() else settings.data_dir / path
        if full.is_file():
            found[name] = full
    return found


def csv_records(path: Path, opts: CsvOptions) -> tuple[bytes, list[str]]:
    """A labelled CSV as OpenAI messages JSONL (system prompt first), and notes: skipped rows, the label spread."""
    from finetune.data.formats import DataError, to_record
    from finetune.data.labelled import CsvColumns, label_warning, parse_label_names, read_labelled_csv

    try:
        names = parse_label_names(opts.labels) if opts.labels.strip() else {}
        cols = CsvColumns(opts.text_column, opts.label_column, names, opts.prompt, opts.system.strip() or None)
        convs, problems = read_labelled_csv(path, cols)
    except DataError as exc:
        raise ConsoleError(str(exc).replace(str(path), path.name)) from None
    lines = [json.dumps(to_record(c, "openai"), ensure_ascii=False) for c in convs]
    notes = [f"CSV line {p.line}: {p.message}" for p in problems[:10]]
    if len(problems) > 10:
        notes.append(f"and {len(problems) - 10} more CSV rows skipped")
    warning = label_warning(convs)
    return ("\n".join(lines) + "\n").encode(), [*notes, *([f"⚠️ {warning}"] if warning else [])]


def add_dataset(settings: ServiceSettings, path: Path, filename: str, opts: CsvOptions) -> tuple[FileRecord, str]:
    """Store a data set as a fine-tune file (as POST /v1/files does; a CSV converted first). Returns the record
    and the validation report (Markdown). ConsoleError when nothing in it can be trained on."""
    notes: list[str] = []
    if path.suffix.lower() == ".csv":
        data, notes = csv_records(path, opts)
        filename = Path(filename).stem + ".jsonl"
    else:
        data = path.read_bytes()
    if len(data) > settings.max_file_bytes:
        raise ConsoleError(f"{filename}: too large (the limit is {settings.max_file_bytes} bytes, max_file_bytes)")
    try:
        record = FileStore(settings.data_dir).create(data, filename, "fine-tune")
    except FileRejected as exc:
        raise ConsoleError(exc.message) from None
    return record, report(record, notes)


def report(record: FileRecord, notes: list[str] | None = None) -> str:
    """The validation report: format, records, skipped lines with their numbers, the label warning."""
    d = record.details
    lines = [f"**{record.filename}** → `{record.id}`: {d.get('records')} valid {d.get('format')} records, "
             f"{d.get('skipped', 0)} bad lines skipped"]  # fmt: skip
    lines += [f"- line {p['line']}: {p['message']}" for p in (d.get("problems") or [])[:10]]
    if d.get("system_prompt"):
        lines.append(f"- system prompt of every record: {d['system_prompt']}")
    lines += [f"- {n}" for n in notes or []]
    return "\n".join(lines)


def preview(settings: ServiceSettings, file_id: str, n: int = PREVIEW_ROWS) -> list[dict[str, Any]]:
    """The first `n` records of a fine-tune file: {system, user, assistant} (last turn; cut to PREVIEW_CHARS)."""
    from finetune.data.formats import read

    convs, _ = read(FileStore(settings.data_dir).path(file_id))

    def cut(text: str | None) -> str:
        text = text or ""
        return text if len(text) <= PREVIEW_CHARS else text[:PREVIEW_CHARS] + "…"

    return [{"#": i, "system": cut(c.system), "user": cut(c.messages[-2]["content"]),
             "assistant": cut(c.messages[-1]["content"])} for i, c in enumerate(convs[:n], 1)]  # fmt: skip


def job_request(form: dict[str, Any]) -> dict[str, Any]:
    """The JSON body of POST /v1/fine_tuning/jobs from the tab's fields (an `advanced` JSON object is merged into
    the `kongming` extension, section by section)."""
    hp = {"n_epochs": _auto(form.get("epochs"), int), "batch_size": _auto(form.get("batch_size"), int),
          "learning_rate_multiplier": _auto(form.get("lr_multiplier"), float)}  # fmt: skip
    lora = {"r": int(form["rank"]), "alpha": int(form["alpha"]), "dropout": float(form["dropout"]),
            "target_modules": list(form.get("target_modules") or [])}  # fmt: skip
    ext: dict[str, Any] = {"task": form.get("task") or "chat", "lora": lora, "train": {}, "data": {}, "eval": {}}
    if form.get("max_steps"):
        ext["train"]["max_steps"] = int(form["max_steps"])
    if (form.get("system") or "").strip() and ext["task"] == "chat":
        ext["data"]["system"] = form["system"].strip()
    advanced = (form.get("advanced") or "").strip()
    if advanced:
        try:
            extra = json.loads(advanced)
        except json.JSONDecodeError as exc:
            raise ConsoleError(f"advanced options: not JSON ({exc.msg} at line {exc.lineno})") from None
        if not isinstance(extra, dict):
            raise ConsoleError("advanced options: a JSON object of sections (lora, train, data, eval)")
        for section, value in extra.items():
            ext[section] = {**ext.get(section, {}), **value} if isinstance(value, dict) else value
    body = {"model": form["model"], "training_file": form["training_file"], "suffix": form.get("suffix") or None,
            "method": {"type": "supervised", "supervised": {"hyperparameters": hp}}, "kongming": ext}  # fmt: skip
    return body


def _auto(value: Any, kind: type) -> Any:
    return "auto" if value in (None, "", 0) else kind(value)


def create(settings: ServiceSettings, state: Any, body: dict[str, Any]) -> JobRecord:
    """Create the job as the route does (the request model validates it, the base must be offered); ConsoleError
    with the API's message otherwise. The app's worker process is started when it is not running."""
    from pydantic import ValidationError

    from finetune.jobs.queue import create_job
    from finetune.jobs.spec import SpecError

    from ..errors import ServiceError
    from ..fine_tuning import JobCreateRequest
    from ..routes.fine_tuning import base_for

    try:
        request = JobCreateRequest.model_validate(body)
        job = create_job(settings.data_dir, request.to_job(base_for(settings, request.model)))
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConsoleError(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from None
    except (SpecError, ServiceError) as exc:
        raise ConsoleError(str(exc)) from None
    worker = getattr(state, "jobs_worker", None)
    if worker is not None:
        worker.ensure_running()
    return job


def cancel(settings: ServiceSettings, job_id: str) -> JobRecord:
    from finetune.jobs.queue import JobStateError, cancel_job

    try:
        return cancel_job(JobStore(settings.data_dir), job_id)
    except KeyError:
        raise ConsoleError(f"no such fine-tuning job: {job_id}") from None
    except JobStateError as exc:
        raise ConsoleError(str(exc)) from None


def jobs(settings: ServiceSettings, limit: int = 50) -> list[JobRecord]:
    return JobStore(settings.data_dir).list_jobs(limit=limit)[0]


def status_line(job: JobRecord) -> str:
    """Markdown: the job's id, status, model, progress, and its error or fine-tuned model."""
    parts = [f"**{job.id}** · status **{job.status}** · base `{job.request.get('model')}`"]
    if job.fine_tuned_model:
        parts.append(f"model `{job.fine_tuned_model}`")
    if job.trained_tokens:
        parts.append(f"{job.trained_tokens} tokens trained")
    if job.error:
        parts.append(f"⚠️ {job.error.get('message')}")
    return " · ".join(parts)


def job_view(settings: ServiceSettings, job_id: str) -> tuple[JobRecord, list[Any], list[dict[str, Any]],
                                                                list[dict[str, Any]]]:
    """(the job, its events newest first, loss points [{step, loss, series: train|validation}], evaluation rows
    [{section, metric, model, value}]); KeyError for an unknown job."""
    store = JobStore(settings.data_dir)
    job = store.get_job(job_id)
    if job is None:
        raise KeyError(job_id)
    events, _ = store.list_events(job_id, limit=10_000)
    points, evaluation = [], []
    for e in reversed(events):
        data = e.data or {}
        if e.type == "metrics" and data.get("train_loss") is not None:
            points.append({"step": data["step"], "loss": data["train_loss"], "series": "train"})
        elif e.type == "metrics" and data.get("valid_loss") is not None:
            points.append({"step": data["step"], "loss": data["valid_loss"], "series": "validation"})
        if e.message.startswith("Evaluation:"):
            evaluation = eval_rows(data)
    return job, events, points, evaluation


def loss_figure(points: list[dict[str, Any]]) -> Any:
    """The loss chart (a matplotlib Figure): the training loss as a line, the validation loss as a line with a
    marker on each of its steps (one validation step is still a visible point), whole-number steps on the x axis,
    the legend inside the plot; None before the first point."""
    if not points:
        return None
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(10, 3.2), layout="constrained")
    ax = fig.add_subplot()
    for series, color, marker, dash in (("train", "#4c78a8", ".", "-"), ("validation", "#f58518", "o", "--")):
        mine = sorted((p["step"], p["loss"]) for p in points if p["series"] == series)
        if mine:
            ax.plot([s for s, _ in mine], [v for _, v in mine], label=f"{series} loss", color=color, marker=marker,
                    linestyle=dash)  # fmt: skip
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.margins(x=0.04, y=0.12)  # no marker on the frame's edge
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")  # where it covers the fewest points
    return fig


def eval_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The evaluation report's numbers, one row per (section, metric, model): base, tuned, baselines (`reference`
    scores the references against themselves: the top of each scale), with the metric's scale."""
    rows = []
    for section in EVAL_SECTIONS:
        for who, metrics in (report.get(section) or {}).items():
            if not isinstance(metrics, dict):
                continue
            for name, value in metrics.items():
                if isinstance(value, dict):
                    value = value.get("score")
                    name = f"{name} score"
                if isinstance(value, int | float) and not isinstance(value, bool):
                    rows.append({"section": section, "metric": name, "model": who, "value": round(float(value), 4),
                                 "scale": EVAL_SCALES.get(name, "")})  # fmt: skip
    return rows
