"""The console's acceptance over the whole novel, from an empty data folder (opt-in: KONGMING_UI_NOVEL_UPLOAD=1;
about 10-20 minutes of embedding on 2 cores): 三国演义 uploaded through the Knowledge base tab into a new knowledge
base with its progress shown, the retrieval test for 草船借箭 puts chapter 46 on top, and the Chat tab, pointed at that
knowledge base, answers with its citations in view. Screenshots for a person to look at."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.service.conftest import ServerThread
from tests.service.test_ui_console import choose, errors
from tests.service.uipage import WAIT_MS, chromium, last_bot, screenshot, send

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::DeprecationWarning:gradio.queueing"),
    pytest.mark.skipif(not os.environ.get("KONGMING_UI_NOVEL_UPLOAD"),
                       reason="set KONGMING_UI_NOVEL_UPLOAD=1 to upload the whole novel through the page"),
]
KEY = "sk-novel-upload"
INGEST_S = 3600  # the whole novel's embedding, on a busy 2-core machine


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from chromium()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    from ingest.settings import get_settings
    from service.app import build_chat_service, create_app
    from service.settings import get_service_settings

    data = tmp_path_factory.mktemp("novel-upload") / "data"
    settings = get_service_settings(data_dir=data, api_keys=[KEY])
    app = create_app(settings, chat=build_chat_service(settings, get_settings(data_dir=data)), ui=True)
    srv = ServerThread(app)
    srv.server.config.lifespan = "on"
    srv.start(timeout=60)
    yield srv
    srv.stop()


@pytest.mark.timeout(INGEST_S + 600)
def test_the_whole_novel_uploaded_retrieved_and_cited_through_the_page(
    browser: Any, server: ServerThread, tmp_path: Path
) -> None:
    from tests.conftest import shared_file

    novel = shared_file("corpus", "sanguo_yanyi.txt")
    page = browser.new_context(viewport={"width": 1280, "height": 1000}).new_page()
    page.goto(server.url + "/ui/")
    page.get_by_role("tab", name=re.compile("知识库")).click()
    page.fill("#api-key input", KEY)
    from playwright.sync_api import expect

    expect(page.locator("#kb-store input")).to_have_value(re.compile("default"), timeout=WAIT_MS)  # the key loaded
    page.fill("#kb-new-name textarea", "三国演义")
    page.click("#kb-create")
    expect(page.locator("#kb-store input")).to_have_value(re.compile("三国演义"), timeout=WAIT_MS)
    page.locator("#kb-upload input[type=file]").set_input_files(str(novel))
    page.locator("#kb-upload").get_by_text(novel.name).first.wait_for(timeout=WAIT_MS)
    started = time.monotonic()
    page.click("#kb-ingest")
    states: list[str] = []  # each distinct progress text once, until the ingest is done
    while "ingested" not in (states or [""])[-1] and time.monotonic() < started + INGEST_S:
        said = page.locator("#kb-progress").inner_text()
        if not states or said != states[-1]:
            states.append(said)
            print(f"{time.monotonic() - started:6.0f} s  {said!r}"[:200], flush=True)
            embedding = [t for t in states if re.search(r"embedding [1-9]\d*/\d+", t)]
            if embedding == [said]:  # the first count above zero
                screenshot(page, tmp_path, "whole_novel_upload_progress")
        assert not page.locator(".toast-body").count(), errors(page)
        page.wait_for_timeout(1000)
    print(f"ingested in {time.monotonic() - started:.0f} s; progress said {len(states)} distinct things")
    assert any(re.search(r"embedding [1-9]\d*/\d+", s) for s in states), states
    assert "completed" in page.locator("#kb-progress").inner_text(), states[-3:]
    screenshot(page, tmp_path, "whole_novel_upload_done")

    page.fill("#kb-query textarea", "草船借箭")
    page.click("#kb-search")
    expect(page.locator("#kb-hits tbody tr").first).to_contain_text("46", timeout=WAIT_MS)
    screenshot(page, tmp_path, "whole_novel_retrieval_test_caochuan")

    page.get_by_role("tab", name=re.compile("对话")).click()
    choose(page, "#chat-store", re.compile("三国演义"))
    send(page, "孔明草船借箭借了多少支箭？", "rag")
    text = last_bot(page, "sources")
    assert "第46回" in text.split("sources", 1)[1], text
    page.wait_for_timeout(600)
    screenshot(page, tmp_path, "whole_novel_chat_with_citations")
