"""The Fine-tune tab's in-process calls: a labelled CSV becomes chat records with a system prompt (bad rows and a
lopsided label spread reported), the form becomes the jobs API's request, the evaluation becomes a table."""

from __future__ import annotations

import pytest

from service.settings import get_service_settings
from service.ui import ft_ops


def test_a_labelled_csv_becomes_a_checked_file_of_chat_records(tmp_path):
    rows = ["review,label", *(f"好吃{i},1" for i in range(12)), "送餐太慢,0", ",1", "还行,7"]
    (tmp_path / "reviews.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    settings = get_service_settings(data_dir=tmp_path / "svc")
    opts = ft_ops.CsvOptions(labels="0=差评,1=好评", system="你是一位外卖评论好评差评评论专家。")
    record, report = ft_ops.add_dataset(settings, tmp_path / "reviews.csv", "reviews.csv", opts)
    assert record.filename == "reviews.jsonl" and record.details["records"] == 13
    assert "13 valid openai records" in report and "你是一位外卖评论好评差评评论专家。" in report
    assert "CSV line 15: empty review" in report and "CSV line 16: label '7'" in report, report
    assert "92%" in report, "one label is 12 of 13 records: said"
    first = ft_ops.preview(settings, record.id)[0]
    assert first == {"#": 1, "system": "你是一位外卖评论好评差评评论专家。", "user": "好吃0", "assistant": "好评"}


def test_a_file_with_nothing_to_train_on_is_refused_with_the_reason(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"nope": 1}\n', encoding="utf-8")
    with pytest.raises(ft_ops.ConsoleError, match=r"bad\.jsonl: cannot tell the format"):
        ft_ops.add_dataset(get_service_settings(data_dir=tmp_path), tmp_path / "bad.jsonl", "bad.jsonl",
                           ft_ops.CsvOptions())  # fmt: skip


def test_the_form_becomes_the_jobs_api_request():
    form = {"model": "tiny", "training_file": "file-x", "task": "classify", "suffix": "", "system": "s",
            "epochs": 0, "lr_multiplier": 2, "batch_size": 4, "max_steps": 0, "rank": 8, "alpha": 16,
            "dropout": 0.1, "target_modules": ["q_proj"], "advanced": '{"train": {"max_seq_len": 64}}'}  # fmt: skip
    body = ft_ops.job_request(form)
    assert body["method"]["supervised"]["hyperparameters"] == {"n_epochs": "auto", "batch_size": 4,
                                                               "learning_rate_multiplier": 2.0}
    assert body["suffix"] is None and body["kongming"]["task"] == "classify"
    assert body["kongming"]["lora"] == {"r": 8, "alpha": 16, "dropout": 0.1, "target_modules": ["q_proj"]}
    assert body["kongming"]["train"] == {"max_seq_len": 64} and body["kongming"]["data"] == {}
    with pytest.raises(ft_ops.ConsoleError, match="not JSON"):
        ft_ops.job_request({**form, "advanced": "{train"})


def test_a_request_the_api_refuses_is_refused_with_its_message(tmp_path):
    settings = get_service_settings(data_dir=tmp_path)
    body = ft_ops.job_request({"model": "gpt-4o", "training_file": "file-x", "rank": 8, "alpha": 16,
                               "dropout": 0, "target_modules": []})  # fmt: skip
    with pytest.raises(ft_ops.ConsoleError, match="cannot be fine-tuned here"):
        ft_ops.create(settings, None, body)


def test_the_evaluation_report_as_rows():
    report = {"val": {"tuned": {"loss": 1.5, "perplexity": 4.48}}, "generation": {"tuned": {"style": {"score": 0.4}}},
              "classification": {"majority": {"accuracy": 0.5}}, "model": "tiny"}
    assert [{k: r[k] for k in ("section", "metric", "model", "value")} for r in ft_ops.eval_rows(report)] == [
        {"section": "val", "metric": "loss", "model": "tuned", "value": 1.5},
        {"section": "val", "metric": "perplexity", "model": "tuned", "value": 4.48},
        {"section": "generation", "metric": "style score", "model": "tuned", "value": 0.4},
        {"section": "classification", "metric": "accuracy", "model": "majority", "value": 0.5},
    ]


def test_each_evaluation_number_says_its_scale():
    """BLEU 0.578 beside ROUGE-L 0.054 and a reference BLEU of 100 reads only with the scales beside them."""
    report = {"generation": {"reference": {"bleu": 100.0, "rouge_l": 1.0}, "tuned": {"bleu": 0.578, "rouge_l": 0.054,
                                                                                     "loop_rate": 0.0}}}  # fmt: skip
    scale = {(r["model"], r["metric"]): r["scale"] for r in ft_ops.eval_rows(report)}
    assert scale[("tuned", "bleu")].startswith("0-100") and scale[("reference", "bleu")].startswith("0-100")
    assert scale[("tuned", "rouge_l")].startswith("0-1,") and scale[("tuned", "loop_rate")].startswith("0-1,")
    from service.ui.finetune import EVAL_COLUMNS

    assert "scale" in EVAL_COLUMNS, "the page's table shows the column"


def test_an_empty_data_set_list_says_which_setting_fills_it(tmp_path):
    from service.ui.finetune import datasets_note

    settings = get_service_settings(data_dir=tmp_path, finetune_datasets={"甄嬛": "persona/huanhuan.json"})
    note = datasets_note(settings)
    assert note and "KONGMING_FINETUNE_DATASETS" in note and "persona/huanhuan.json" in note, note
    assert str(tmp_path) not in note, "no server path on the page"
    (tmp_path / "persona").mkdir()
    (tmp_path / "persona" / "huanhuan.json").write_text("[]", encoding="utf-8")
    assert datasets_note(settings) is None, "a listed data set needs no note"


def test_the_loss_chart_draws_training_and_validation_loss_on_whole_steps(tmp_path):
    from finetune.jobs.store import JobRecord, JobStore

    settings = get_service_settings(data_dir=tmp_path)
    store = JobStore(tmp_path)
    store.add_job(JobRecord(id="ftjob-x", created_at=0, status="running", request={"model": "tiny"}))
    for step, loss in ((1, 6.02), (2, 5.71), (3, 5.47)):
        store.add_event("ftjob-x", f"Step {step}", type="metrics", data={"step": step, "train_loss": loss})
    store.add_event("ftjob-x", "Step 3: validation loss=6.0520", type="metrics", data={"step": 3, "valid_loss": 6.052})
    *_, points, _ = ft_ops.job_view(settings, "ftjob-x")
    fig = ft_ops.loss_figure(points)
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines["train loss"].get_xdata()) == [1, 2, 3]
    val = lines["validation loss"]
    assert list(val.get_xdata()) == [3] and list(val.get_ydata()) == [6.052]
    assert val.get_marker() not in (None, "", "None"), "one validation step is still a visible point"
    fig.canvas.draw()
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["train loss", "validation loss"]
    box, frame = legend.get_window_extent(), fig.bbox
    assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1, "not clipped"
    assert ft_ops.loss_figure([]) is None


def test_the_first_records_table_leaves_out_a_column_empty_in_every_row():
    from service.ui.finetune import preview_table

    rows = [{"#": 1, "system": "", "user": "娘娘。", "assistant": "你放心。"},
            {"#": 2, "system": "", "user": "皇上驾到！", "assistant": "皇上万福金安。"}]  # fmt: skip
    assert list(preview_table(rows).columns) == ["#", "user", "assistant"]
    rows[1]["system"] = "你是甄嬛。"
    assert list(preview_table(rows).columns) == ["#", "system", "user", "assistant"]
    assert list(preview_table([]).columns) == ["#", "system", "user", "assistant"], "the empty table keeps its header"
    from service.ui.finetune import preview_widths

    widths = preview_widths(["#", "user", "assistant"])
    assert len(widths) == 3 and abs(sum(float(w.rstrip("%")) for w in widths) - 100) <= 1, widths
