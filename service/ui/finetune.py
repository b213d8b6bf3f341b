"""The Fine-tune tab: a data set (configured or uploaded; a labelled CSV becomes chat records) checked and previewed,
hyperparameters, start, a live loss plot, status, events, cancel, the evaluation, and deploy into the Chat tab."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from finetune.training.config import ALL_PROJECTIONS, LoraConfig

from ..keys import KeyRing
from . import ft_ops
from .access import require_key, table
from .chat import model_choices

if TYPE_CHECKING:
    from ..answer.chat import ChatService

UPLOAD = "上传文件 upload"
TARGETS = ALL_PROJECTIONS
REFRESH_S = 2.0
EVENT_COLUMNS = ["time", "level", "message"]
EVAL_COLUMNS = ["section", "metric", "model", "value", "scale"]
PREVIEW_COLUMNS = ["#", "system", "user", "assistant"]
UNBOUND = "（不绑定人物 no persona）"


def _fail(exc: Exception) -> None:
    import gradio as gr

    raise gr.Error(str(exc), title="fine-tune")


def datasets_note(settings: Any) -> str | None:
    """Why the data-set list holds only «upload», when it does: the setting that lists them and where files go."""
    if ft_ops.dataset_paths(settings):
        return None
    missing = ", ".join(str(p) for p in settings.finetune_datasets.values())
    return ("没有可选的数据集 no data set found: KONGMING_FINETUNE_DATASETS names them (JSON {name: file}, a file "
            "relative to KONGMING_DATA_DIR) and " + (f"none is there ({missing})" if missing else "names none")
            + "; put the files there and reload, or upload one here")


def job_choices(chat: ChatService) -> list[tuple[str, str]]:
    return [(f"{j.id} · {j.status}", j.id) for j in ft_ops.jobs(chat.settings)]


def make_job_list(chat: ChatService, ring: KeyRing) -> Any:
    def job_list(key: str, chosen: str | None) -> Any:
        import gradio as gr

        require_key(ring, key)
        choices = job_choices(chat)
        ids = [c[1] for c in choices]
        return gr.update(choices=choices, value=chosen if chosen in ids else (ids[0] if ids else None))

    return job_list


def make_prepare(chat: ChatService, ring: KeyRing) -> Any:
    def prepare(key: str, source: str, upload: str | None, labels: str, system: str, text_col: str,
                label_col: str) -> tuple[str, str, Any]:
        """The data set stored as a fine-tune file: (file id, validation report, preview table)."""
        require_key(ring, key)
        paths = ft_ops.dataset_paths(chat.settings)
        if source == UPLOAD or source not in paths:
            if not upload:
                _fail(ft_ops.ConsoleError("choose a data set, or upload a .jsonl / .json / .csv file"))
            path, name = Path(str(upload)), Path(str(upload)).name
        else:
            path, name = paths[source], paths[source].name
        opts = ft_ops.CsvOptions(labels=labels, system=system, text_column=text_col or "review",
                                 label_column=label_col or "label")  # fmt: skip
        try:
            record, report = ft_ops.add_dataset(chat.settings, path, name, opts)
        except ft_ops.ConsoleError as exc:
            _fail(exc)
        import gradio as gr

        shown = preview_table(ft_ops.preview(chat.settings, record.id))
        return record.id, report, gr.update(value=shown, column_widths=preview_widths(list(shown.columns)))

    return prepare


def preview_table(rows: list[dict[str, Any]]) -> Any:
    """The first records as the page shows them: a column empty in every row (no system prompt) is left out, since
    the table gives it a sliver of width and its header then stands one letter per line."""
    kept = [c for c in PREVIEW_COLUMNS if c == "#" or any(r.get(c) for r in rows)] if rows else PREVIEW_COLUMNS
    return table(rows, kept)


def preview_widths(columns: list[str]) -> list[str]:
    """Column widths for the first-records table: set widths let long Chinese text (no spaces) wrap in its column
    instead of running the table past the page's edge."""
    weight = {"#": 1, "system": 5, "user": 8, "assistant": 8}
    total = sum(weight[c] for c in columns)
    return [f"{100 * weight[c] / total:.0f}%" for c in columns]


def make_start(chat: ChatService, ring: KeyRing, state: Any) -> Any:
    def start(key: str, file_id: str, *values: Any) -> tuple[Any, str]:
        """Create the job from the form; the job list with it selected, and its status."""
        import gradio as gr

        require_key(ring, key)
        if not file_id:
            _fail(ft_ops.ConsoleError("check a data set first (the «check data set» button)"))
        names = ["model", "task", "suffix", "system", "epochs", "lr_multiplier", "batch_size", "max_steps", "rank",
                 "alpha", "dropout", "target_modules", "advanced"]  # fmt: skip
        form = {**dict(zip(names, values, strict=True)), "training_file": file_id}
        try:
            job = ft_ops.create(chat.settings, state, ft_ops.job_request(form))
        except ft_ops.ConsoleError as exc:
            _fail(exc)
        return gr.update(choices=job_choices(chat), value=job.id), ft_ops.status_line(job)

    return start


def make_refresh(chat: ChatService, ring: KeyRing) -> Any:
    def refresh(key: str, job_id: str | None) -> tuple[Any, ...]:
        """Status, loss points, events and evaluation of the chosen job (the timer calls it: no key, no job,
        nothing changes and nothing is said)."""
        import gradio as gr

        from .access import console_refusal

        if not job_id or console_refusal(ring, key) is not None:
            return gr.update(), gr.update(), gr.update(), gr.update()
        try:
            job, events, points, evaluation = ft_ops.job_view(chat.settings, job_id)
        except KeyError:
            return f"no such job {job_id}", gr.update(), gr.update(), gr.update()
        from datetime import UTC, datetime

        rows = [{"time": datetime.fromtimestamp(e.created_at, UTC).strftime("%H:%M:%S"), "level": e.level,
                 "message": e.message} for e in events[:30]]  # fmt: skip
        return (ft_ops.status_line(job), ft_ops.loss_figure(points), table(rows, EVENT_COLUMNS),
                table(evaluation, EVAL_COLUMNS))

    return refresh


def make_actions(chat: ChatService, ring: KeyRing) -> tuple[Any, Any]:
    def cancel(key: str, job_id: str | None) -> str:
        require_key(ring, key)
        try:
            return ft_ops.status_line(ft_ops.cancel(chat.settings, job_id or ""))
        except ft_ops.ConsoleError as exc:
            _fail(exc)
            raise

    async def deploy(key: str, job_id: str | None, persona: str) -> tuple[Any, str]:
        """Make the job's model the Chat tab's choice (it is served already); optionally a persona speaks with it."""
        import gradio as gr

        from ..errors import ServiceError, error_body

        require_key(ring, key)
        job, *_ = ft_ops.job_view(chat.settings, job_id) if job_id else (None,)
        if job is None or not job.fine_tuned_model:
            _fail(ft_ops.ConsoleError("only a succeeded job has a model to deploy"))
        assert job is not None and job.fine_tuned_model is not None
        said = f"`{job.fine_tuned_model}` is now in the Chat tab's «model» list"
        if persona and persona != UNBOUND:
            try:
                await chat.served.bind(job.fine_tuned_model, persona)
            except ServiceError as exc:
                _fail(ft_ops.ConsoleError(error_body(exc)[1].error.message))
            said += (f", and persona {persona} answers with it instead of its own model (undo: deploy again with "
                     f"persona «{UNBOUND}»)")
            config, tuned = chat.settings.persona(persona), chat.served.get(job.fine_tuned_model)
            if config and tuned and tuned.system_prompt and tuned.system_prompt != config.system_prompt:
                said += (f". Note: it was trained with another system prompt ({tuned.system_prompt[:40]!r}) than the "
                         f"persona's, which it is now given")
        elif (tuned := chat.served.get(job.fine_tuned_model)) is not None and tuned.persona:
            await chat.served.bind(job.fine_tuned_model, None)
            said += f", and persona {tuned.persona} answers with its own model again"
        return gr.update(choices=model_choices(chat), value=job.fine_tuned_model), said

    return cancel, deploy


def build_finetune_tab(gr: Any, chat: ChatService, ring: KeyRing, key: Any, chat_model: Any, state: Any) -> None:
    from finetune.models.base import DEFAULT_MODEL

    s = chat.settings
    file_id = gr.State("")
    with gr.Row():
        source = gr.Dropdown([*ft_ops.dataset_paths(s), UPLOAD], value=UPLOAD, label="数据集 data set",
                             elem_id="ft-source", info=datasets_note(s))  # fmt: skip
        upload = gr.File(label="上传 upload (.jsonl .json .csv)", file_types=[".jsonl", ".json", ".csv"],
                         type="filepath", elem_id="ft-upload")  # fmt: skip
    with gr.Accordion("带标签的 CSV → 对话记录 labelled CSV → chat records", open=False):
        with gr.Row():
            labels = gr.Textbox("0=差评,1=好评", label="labels (value=name)", elem_id="ft-labels")
            text_col = gr.Textbox("review", label="text column")
            label_col = gr.Textbox("label", label="label column")
    system = gr.Textbox(label="系统提示词 system prompt (CSV records; a chat job's data.system)", elem_id="ft-system")
    prepare = gr.Button("检查数据集 check data set", elem_id="ft-prepare")
    report = gr.Markdown(elem_id="ft-report")
    preview = gr.Dataframe(table([], PREVIEW_COLUMNS), label="前几条记录 first records", interactive=False,
                           elem_id="ft-preview", wrap=True, column_widths=preview_widths(PREVIEW_COLUMNS))  # fmt: skip
    with gr.Row():
        base = gr.Dropdown([DEFAULT_MODEL, *s.finetune_bases], value=DEFAULT_MODEL, label="基座模型 base model",
                           elem_id="ft-base")  # fmt: skip
        task = gr.Radio(["chat", "classify"], value="chat", label="任务 task", elem_id="ft-task")
        suffix = gr.Textbox(label="后缀 suffix", placeholder="e.g. waimai", elem_id="ft-suffix")
    with gr.Row():
        epochs = gr.Number(3, label="轮数 epochs (0 = auto)", precision=0, minimum=0, elem_id="ft-epochs")
        lr = gr.Number(1.0, label="学习率倍数 learning-rate multiplier (× 2e-4)", minimum=0, elem_id="ft-lr")
        batch = gr.Number(8, label="批大小 batch size", precision=0, minimum=0, elem_id="ft-batch")
        max_steps = gr.Number(0, label="最多步数 max steps (0 = whole epochs)", precision=0, minimum=0,
                              elem_id="ft-steps")  # fmt: skip
    with gr.Row():
        lora = LoraConfig()  # the API's defaults: a job started here or through the API trains alike
        rank = gr.Number(lora.r, label="LoRA rank r", precision=0, minimum=1, elem_id="ft-rank")
        alpha = gr.Number(lora.alpha, label="LoRA alpha", precision=0, minimum=1, elem_id="ft-alpha")
        dropout = gr.Number(lora.dropout, label="LoRA dropout", minimum=0, maximum=0.9, elem_id="ft-dropout")
        targets = gr.CheckboxGroup(TARGETS, value=[t for t in TARGETS if t in lora.target_modules],
                                   label="目标模块 target modules", elem_id="ft-targets")
    advanced = gr.Textbox(label="高级 advanced (JSON: lora / train / data / eval sections of the kongming extension)",
                          placeholder='{"train": {"max_seq_len": 512}}', lines=2, elem_id="ft-advanced")
    start = gr.Button("开始微调 start fine-tuning", variant="primary", elem_id="ft-start")
    with gr.Row():
        job = gr.Dropdown([], label="任务 job", elem_id="ft-job", scale=3)  # listed once a key is given
        jobs_btn = gr.Button("刷新任务 list jobs", elem_id="ft-jobs", scale=1)
        cancel_btn = gr.Button("取消任务 cancel job", variant="stop", elem_id="ft-cancel", scale=1)
    status = gr.Markdown(elem_id="ft-status")
    # no floating label: it lay over the chart's top (the figure's axes and legend say what it is)
    plot = gr.Plot(label="损失 loss (train, validation)", show_label=False, elem_id="ft-loss", format="png")
    evaluation = gr.Dataframe(table([], EVAL_COLUMNS), label="评估 evaluation", interactive=False, elem_id="ft-eval",
                              wrap=True)  # fmt: skip
    events = gr.Dataframe(table([], EVENT_COLUMNS), label="事件 events (newest first)", interactive=False,
                          elem_id="ft-events", wrap=True)  # fmt: skip
    with gr.Row():
        persona = gr.Dropdown([UNBOUND, *(p.name for p in s.personas)], value=UNBOUND, label="人物 persona (optional)",
                              elem_id="ft-persona")  # fmt: skip
        deploy_btn = gr.Button("部署到对话 deploy to Chat", elem_id="ft-deploy")
    deployed = gr.Markdown(elem_id="ft-deployed")

    prepare.click(make_prepare(chat, ring), [key, source, upload, labels, system, text_col, label_col],
                  [file_id, report, preview], api_visibility="private")  # fmt: skip
    form = [base, task, suffix, system, epochs, lr, batch, max_steps, rank, alpha, dropout, targets, advanced]
    start.click(make_start(chat, ring, state), [key, file_id, *form], [job, status], api_visibility="private")
    refresh = make_refresh(chat, ring)
    views = [status, plot, events, evaluation]
    job.change(refresh, [key, job], views, api_visibility="private")
    gr.Timer(REFRESH_S).tick(refresh, [key, job], views, api_visibility="private", show_progress="hidden")
    jobs_btn.click(make_job_list(chat, ring), [key, job], job, api_visibility="private")
    cancel, deploy = make_actions(chat, ring)
    cancel_btn.click(cancel, [key, job], status, api_visibility="private")
    deploy_btn.click(deploy, [key, job, persona], [chat_model, deployed], api_visibility="private")
