"""The page's console tabs in a real headless Chromium, on the real service (uvicorn) with its fine-tuning worker:
a document uploaded into a knowledge base and found by the retrieval test; a data set checked and previewed, a
job on a tiny model started, its loss drawn as it trains, deployed, and answering in the Chat tab."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import shared_file
from tests.service.conftest import ServerThread
from tests.service.test_fine_tuning_api import FAST, review_file
from tests.service.uipage import WAIT_MS, chromium, last_bot, offline_page, screenshot, send

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::DeprecationWarning:gradio.queueing"),
]
KEY = "sk-console"
JOB_MS = 240_000  # a worker process starts, trains 4 steps of the tiny model and evaluates it on a busy machine
DOC = "赤壁之后，孔明在南屏山筑七星坛，借得三日东南大风。周瑜见风起，大惊失色。"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from chromium()


@pytest.fixture(scope="module")
def server(kb_settings: Any, tiny_chat_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The app with a key, the tiny model as the fine-tunable base `tiny`, the 甄嬛 set configured."""
    from service.app import build_chat_service, create_app
    from service.settings import get_service_settings
    from tests.service.fakes import QueuedEngine

    settings = get_service_settings(
        data_dir=tmp_path_factory.mktemp("svc"), api_keys=[KEY], finetune_bases={"tiny": str(tiny_chat_model)},
        finetune_datasets={"甄嬛 (huanhuan.json)": shared_file("persona", "huanhuan.json")},
    )  # fmt: skip
    engines = {p.name: QueuedEngine(p.name) for p in settings.personas}
    app = create_app(settings, chat=build_chat_service(settings, kb_settings, engines=engines), ui=True)
    srv = ServerThread(app)
    srv.server.config.lifespan = "on"  # Gradio's queue, the worker and the vector stores live in the lifespan
    srv.start(timeout=60)
    yield srv
    if app.state.jobs_worker is not None:
        app.state.jobs_worker.stop()
    srv.stop()


@pytest.fixture
def page(browser: Any, server: ServerThread) -> Iterator[Any]:
    yield from offline_page(browser, server.url, "#api-key input", viewport={"width": 1280, "height": 1000})


def choose(page: Any, dropdown: str, option: str | re.Pattern[str]) -> None:
    page.locator(f"{dropdown} input").click()
    page.get_by_role("option", name=option).first.click()


def errors(page: Any) -> str:
    return " | ".join(page.locator(".toast-body").all_inner_texts())


def test_console_needs_a_key(page: Any) -> None:
    page.get_by_role("tab", name=re.compile("知识库")).click()
    page.click("#kb-refresh")
    expect_text(page, ".toast-body", "API key")
    page.fill("#api-key input", "km-wrong")
    page.click("#kb-refresh")
    expect_text(page, ".toast-body", "valid API key")


def expect_text(page: Any, selector: str, text: str | re.Pattern[str], timeout: int = WAIT_MS) -> None:
    from playwright.sync_api import expect

    expect(page.locator(selector).last).to_contain_text(text, timeout=timeout)


def test_upload_a_document_and_find_it_with_the_retrieval_test(page: Any, tmp_path: Path) -> None:
    doc = tmp_path / "qixingtan.txt"
    doc.write_text("第四十九回 七星坛诸葛祭风\n\n" + DOC * 3, encoding="utf-8")
    page.get_by_role("tab", name=re.compile("知识库")).click()
    page.fill("#api-key input", KEY)  # the key alone lists the stores and the default store's documents
    expect_text(page, "#kb-docs", "xiao_sanguo.txt")  # the store the chat answers from, made by `ingest`
    page.fill("#kb-new-name textarea", "console test")
    page.click("#kb-create")
    from playwright.sync_api import expect

    # the upload goes to the store chosen when it is clicked: wait for the new one to be chosen
    expect(page.locator("#kb-store input")).to_have_value(re.compile("console test"), timeout=WAIT_MS)
    page.locator("#kb-upload input[type=file]").set_input_files(str(doc))
    page.locator("#kb-upload").get_by_text("qixingtan.txt").first.wait_for(timeout=WAIT_MS)
    page.click("#kb-ingest")
    expect_text(page, "#kb-progress", re.compile("ingesting|ingested"))
    expect_text(page, "#kb-progress", "ingested")
    assert "completed" in page.locator("#kb-progress").inner_text(), errors(page)
    expect_text(page, "#kb-docs", "qixingtan.txt")
    assert not page.locator("#kb-upload").get_by_text("qixingtan.txt").count(), "the upload box is emptied"
    from playwright.sync_api import expect

    expect(page.locator("#kb-store input")).to_have_value(re.compile("· 1 file$"), timeout=WAIT_MS)  # the new count
    assert not page.locator("#kb-doc input").input_value(), "no document is chosen for the user"
    choose(page, "#kb-doc", re.compile("qixingtan.txt"))
    page.click("#kb-show")
    expect_text(page, "#kb-chunks", "七星坛")
    page.fill("#kb-query textarea", "孔明在哪里借东风")
    page.click("#kb-search")
    expect_text(page, "#kb-hits", "qixingtan.txt")
    hits = page.locator("#kb-hits").inner_text()
    assert "49" in hits and "七星坛诸葛祭风" in hits, hits  # chapter and its title beside the scores
    screenshot(page, tmp_path, "kb_retrieval_test")
    # the Chat tab answers from the knowledge base chosen there (vector_store_ids), the new one here
    page.get_by_role("tab", name=re.compile("对话")).click()
    choose(page, "#chat-store", re.compile("console test"))
    send(page, "孔明在哪里借东风", "rag")
    assert "七星坛" in last_bot(page, "route:"), errors(page)
    page.get_by_role("tab", name=re.compile("知识库")).click()
    choose(page, "#kb-doc", re.compile("qixingtan.txt"))
    page.click("#kb-delete")  # not confirmed: refused, nothing deleted
    expect_text(page, "#kb-progress", "nothing was deleted")
    assert "qixingtan.txt" in page.locator("#kb-docs").inner_text()
    page.locator("#kb-confirm input").check()
    page.click("#kb-delete")
    expect_text(page, "#kb-progress", "deleted qixingtan.txt")
    assert not page.locator("#kb-confirm input").is_checked(), "the confirmation is cleared after a delete"
    expect(page.locator("#kb-store input")).to_have_value(re.compile("0 files"), timeout=WAIT_MS)
    assert "qixingtan.txt" not in page.locator("#kb-docs").inner_text()


def test_fine_tune_a_tiny_model_watch_its_loss_deploy_and_chat_with_it(page: Any, tmp_path: Path) -> None:
    page.fill("#api-key input", KEY)
    page.get_by_role("tab", name=re.compile("微调")).click()
    choose(page, "#ft-source", re.compile("甄嬛"))
    page.click("#ft-prepare")
    expect_text(page, "#ft-report", "3729 valid alpaca records")
    assert "娘娘" in page.locator("#ft-preview").inner_text()

    choose(page, "#ft-source", re.compile("upload"))
    page.locator("#ft-upload input[type=file]").set_input_files(str(review_file(tmp_path / "waimai.jsonl")))
    page.locator("#ft-upload").get_by_text("waimai.jsonl").first.wait_for(timeout=WAIT_MS)
    page.click("#ft-prepare")
    expect_text(page, "#ft-report", "waimai.jsonl")
    expect_text(page, "#ft-report", "24 valid openai records")
    choose(page, "#ft-base", "tiny")
    for field, value in (("#ft-epochs", "1"), ("#ft-lr", "25"), ("#ft-batch", "4"), ("#ft-steps", "4"),
                         ("#ft-rank", "4"), ("#ft-alpha", "8"), ("#ft-dropout", "0")):  # fmt: skip
        page.fill(f"{field} input", value)
    page.fill("#ft-suffix textarea", "console")
    rest = {k: v for k, v in FAST.items() if k != "lora"}
    rest["train"] = {k: v for k, v in rest["train"].items() if k != "max_steps"}
    page.fill("#ft-advanced textarea", json.dumps(rest))
    page.click("#ft-start")
    expect_text(page, "#ft-status", re.compile("status \\*?\\*?(queued|running)|status (queued|running)"))
    # the timer redraws the chart from the job's metrics events while it runs (what it draws: test_ui_finetune)
    page.locator("#ft-loss img").first.wait_for(timeout=JOB_MS)
    expect_text(page, "#ft-status", "succeeded", timeout=JOB_MS)
    expect_text(page, "#ft-eval", "loss", timeout=30_000)
    page.wait_for_timeout(2500)  # one more tick: the chart holds every step
    size = page.evaluate("(() => { const i = document.querySelector('#ft-loss img');"
                         " return [i.naturalWidth, i.naturalHeight]; })()")  # fmt: skip
    assert size[0] > 0 and size[1] > 0, f"the chart image is drawn: {size}"
    events = page.locator("#ft-events").inner_text()
    assert "training loss" in events and "validation loss" in events, events
    screenshot(page, tmp_path, "finetune_loss_plot")

    page.click("#ft-jobs")
    from playwright.sync_api import expect

    # the list, asked for with the key, shows the job's new status
    expect(page.locator("#ft-job input")).to_have_value(re.compile("succeeded"), timeout=WAIT_MS)
    status = page.locator("#ft-status").inner_text()
    model = re.search(r"ft:tiny:console:ftjob-[A-Za-z0-9]+", status)
    assert model, status
    page.click("#ft-deploy")
    expect_text(page, "#ft-deployed", model.group(0))
    page.get_by_role("tab", name=re.compile("对话")).click()
    assert model.group(0) in page.locator("#model input").input_value()
    send(page, "送餐太慢，菜都凉了", "auto")
    text = last_bot(page, "route:")
    assert f"微调模型 {model.group(0)}" in text, text
    assert text.split("route:")[0].strip(), "the tuned model answered something"
    screenshot(page, tmp_path, "chat_with_fine_tuned_model")
