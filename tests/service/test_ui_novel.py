"""The page over the whole novel (opt-in: KONGMING_UI_NOVEL_DATA names a data folder holding the 三国演义 collection
`sanguo`, as `ingest add sanguo_yanyi.txt --collection sanguo` writes it; it is copied, never written): the
retrieval test for 草船借箭 puts chapter 46 on top, and a question in the Chat tab is answered with its citations in
view. Screenshots for a person to look at."""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.service.conftest import ServerThread
from tests.service.uipage import WAIT_MS, chromium, last_bot, screenshot, send

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::DeprecationWarning:gradio.queueing"),
]
KEY = "sk-novel"
# How much of the novel the upload test sends (characters; 0: all of it, about 10 minutes of embedding on 2 cores).
UPLOAD_CHARS = int(os.environ.get("KONGMING_UI_NOVEL_UPLOAD_CHARS", "60000"))


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from chromium()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    source = os.environ.get("KONGMING_UI_NOVEL_DATA")
    if not source or not (Path(source) / "store").is_dir():
        pytest.skip("set KONGMING_UI_NOVEL_DATA to a data folder holding the novel's collection `sanguo`")
    from ingest.settings import get_settings
    from service.app import build_chat_service, create_app
    from service.settings import get_service_settings

    data = tmp_path_factory.mktemp("novel") / "data"
    shutil.copytree(source, data)
    settings = get_service_settings(data_dir=data, api_keys=[KEY])
    kb = get_settings(data_dir=data, collection="sanguo")
    app = create_app(settings, chat=build_chat_service(settings, kb), ui=True)
    srv = ServerThread(app)
    srv.server.config.lifespan = "on"
    srv.start(timeout=60)
    yield srv
    srv.stop()


def test_retrieval_test_and_chat_over_the_whole_novel(browser: Any, server: ServerThread, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    page = browser.new_context(viewport={"width": 1280, "height": 1000}).new_page()
    page.goto(server.url + "/ui/")
    page.fill("#api-key input", KEY)
    page.get_by_role("tab", name=re.compile("知识库")).click()
    page.click("#kb-refresh")
    expect(page.locator("#kb-store input")).to_have_value(re.compile("sanguo"), timeout=WAIT_MS)
    page.fill("#kb-query textarea", "草船借箭")
    page.click("#kb-search")
    first = page.locator("#kb-hits tbody tr").first
    expect(first).to_contain_text("46", timeout=WAIT_MS)
    screenshot(page, tmp_path, "novel_retrieval_test_caochuan")

    page.get_by_role("tab", name=re.compile("对话")).click()
    send(page, "孔明草船借箭借了多少支箭？", "rag")
    text = last_bot(page, "sources")
    assert "第46回" in text.split("sources", 1)[1], text
    page.wait_for_timeout(600)
    screenshot(page, tmp_path, "novel_chat_with_citations")


def test_uploading_the_novel_shows_its_progress(browser: Any, server: ServerThread, tmp_path: Path) -> None:
    from tests.conftest import shared_file

    text = shared_file("corpus", "sanguo_yanyi.txt").read_text(encoding="utf-8")
    novel = tmp_path / "sanguo_part.txt"
    novel.write_text(text[:UPLOAD_CHARS] if UPLOAD_CHARS else text, encoding="utf-8")
    page = browser.new_context(viewport={"width": 1280, "height": 1000}).new_page()
    page.goto(server.url + "/ui/")
    page.fill("#api-key input", KEY)
    page.get_by_role("tab", name=re.compile("知识库")).click()
    page.click("#kb-refresh")
    page.wait_for_function("document.querySelector('#kb-store input').value.includes('sanguo')", timeout=WAIT_MS)
    page.locator("#kb-upload input[type=file]").set_input_files(str(novel))
    page.locator("#kb-upload").get_by_text("sanguo_part.txt").first.wait_for(timeout=WAIT_MS)
    page.click("#kb-ingest")
    states: list[str] = []  # what the progress said, each distinct text once, until the ingest is done
    deadline = time.monotonic() + 1200
    while "ingested" not in (states or [""])[-1] and time.monotonic() < deadline:
        said = page.locator("#kb-progress").inner_text()
        if not states or said != states[-1]:
            states.append(said)
            if re.search(r"embedding [1-9]\d*/\d+ chunks", said):
                screenshot(page, tmp_path, "novel_upload_progress")
        assert not page.locator(".toast-body").count(), page.locator(".toast-body").all_inner_texts()
        page.wait_for_timeout(300)
    assert any(re.search(r"embedding [1-9]\d*/\d+ chunks", s) for s in states), states
    assert "completed" in page.locator("#kb-progress").inner_text()
    screenshot(page, tmp_path, "novel_upload_done")
