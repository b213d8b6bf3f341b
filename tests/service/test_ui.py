"""The Gradio chat page in a real headless Chromium: streamed answers with their route, reason and citations."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from service.errors import UpstreamError
from tests.conftest import NOVEL
from tests.service.conftest import ServerThread
from tests.service.fakes import FailingEngine, QueuedEngine

pytestmark = [
    pytest.mark.integration,
    # gradio 6's queue calls pandas options that pandas 3 deprecates (Pandas4Warning): not ours to fix
    pytest.mark.filterwarnings("ignore::DeprecationWarning:gradio.queueing"),
]

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip
WAIT_MS = 90_000  # first answers load the router and embed on a busy 2-core CI machine
PERSONA_REPLY = "亮以为：借箭之计，在于知天时、识人心。雾起之日，便是功成之时。"
BOT = '#chat [data-testid="bot"]'
# Records every distinct text of the last bot message, so the test sees the partial states of a stream.
WATCH_JS = """() => {
  window.__states = [];
  const chat = document.querySelector('#chat');
  const record = () => {
    const bots = chat.querySelectorAll('[data-testid="bot"]');
    const text = bots.length ? bots[bots.length - 1].innerText : '';
    if (text && window.__states[window.__states.length - 1] !== text) window.__states.push(text);
  };
  new MutationObserver(record).observe(chat, {subtree: true, childList: true, characterData: true});
}"""


def broken_mid_answer() -> FailingEngine:
    """A persona engine whose model server breaks the connection after the first words."""
    return FailingEngine(UpstreamError("the model server closed the connection"), first=("臣妾",))


def chromium_path() -> str | None:
    return os.environ.get("KONGMING_CHROMIUM") or next(
        (p for name in ("chromium", "chromium-browser", "google-chrome") if (p := shutil.which(name))), None
    )


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = chromium_path()
    if executable is None:
        pytest.skip("no Chromium binary found: install Debian's `chromium` package or set KONGMING_CHROMIUM")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # playwright's own browser downloads are unreachable here; the system Chromium is driven directly.
        chromium = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def server(kb_settings: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerThread, QueuedEngine]]:
    """The real app (API + page) on uvicorn; 诸葛亮 answers from a slow queue, 甄嬛's model server is broken."""
    from service.app import build_chat_service, create_app
    from service.settings import get_service_settings

    zhuge = QueuedEngine("zhuge-liang", piece=2, delay=0.15)
    settings = get_service_settings(data_dir=tmp_path_factory.mktemp("svc"))
    chat = build_chat_service(settings, kb_settings, engines={"zhuge-liang": zhuge, "zhen-huan": broken_mid_answer()})
    srv = ServerThread(create_app(settings, chat=chat, ui=True))
    srv.server.config.lifespan = "on"  # Gradio starts its event queue in the app's lifespan, not on request
    srv.start(timeout=60)
    yield srv, zhuge
    srv.stop()


@pytest.fixture
def page(browser: Any, server: tuple[ServerThread, QueuedEngine]) -> Iterator[Any]:
    """A fresh page on /ui; fails the test if the page asked anything of a host other than the service."""
    srv, _ = server
    context = browser.new_context()
    page = context.new_page()
    outside: list[str] = []
    page.on("request", lambda r: None if r.url.startswith((srv.url, "data:", "blob:")) else outside.append(r.url))
    page.goto(srv.url + "/ui/")
    page.wait_for_selector("#message textarea", timeout=WAIT_MS)
    yield page
    context.close()
    assert not outside, f"the chat page reached outside the service (must work offline): {outside}"


def send(page: Any, text: str, route: str) -> None:
    page.locator("#route").get_by_label(route, exact=True).check()
    page.evaluate(WATCH_JS)
    page.fill("#message textarea", text)
    page.click("#send")


def last_bot(page: Any, contains: str) -> str:
    from playwright.sync_api import expect

    bot = page.locator(BOT).last
    expect(bot).to_contain_text(contains, timeout=WAIT_MS)
    return str(bot.inner_text())


def chapter_sentences(chapter: str) -> list[str]:
    body = NOVEL.split(chapter, 1)[1].split("正文", 1)[0].split("作品仅供", 1)[0]
    return [s.strip("　 \n“”") for s in re.split(r"[。！？\n]", body) if len(s.strip("　 \n“”")) >= 8]


def test_rag_answer_shows_route_reason_and_citations(page: Any) -> None:
    send(page, "孔明借了多少支箭？", "rag")
    text = last_bot(page, "sources")
    answer, meta = text.split("route:", 1)
    assert "十万支箭" in answer or "十余万支" in answer, text
    assert "[1]" in answer, "the extractive answer cites its passages"
    assert meta.startswith(" rag (forced)") and "forced by the request" in meta, meta
    sources = meta.split("sources", 1)[1]
    assert "第3回 草船借箭 周瑜用计" in sources, sources
    assert any(s in sources for s in chapter_sentences("第三回")), f"no snippet of chapter 3 in: {sources}"
    assert page.locator("#message textarea").input_value() == "", "the box is cleared after sending"


def test_persona_answer_streams_and_next_turn_sends_plain_history(
    page: Any, server: tuple[ServerThread, QueuedEngine]
) -> None:
    _, zhuge = server
    zhuge.replies.extend([PERSONA_REPLY, "足下过誉了。"])
    send(page, "先生，借箭之时可曾担心？", "persona")
    text = last_bot(page, "route: persona")
    states = page.evaluate("window.__states")
    partial = {s for s in states if s and s != PERSONA_REPLY and PERSONA_REPLY.startswith(s)}
    assert len(partial) >= 2, f"expected the answer to arrive in pieces, saw {states}"
    assert text.startswith(PERSONA_REPLY), text
    assert "route: persona (forced)" in text and "persona: zhuge-liang" in text, text
    assert "sources" not in text, "the persona route cites nothing"

    send(page, "先生神机妙算！", "persona")
    last_bot(page, "足下过誉了。")
    sent = zhuge.calls[-1]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"], sent
    assert sent[2]["content"] == PERSONA_REPLY, "the route line and sources stay on the page, not in the prompt"


def test_service_error_shows_in_the_chat_and_the_page_keeps_working(page: Any) -> None:
    page.locator("#persona input").click()
    page.get_by_role("option", name=re.compile("甄嬛")).click()
    send(page, "娘娘近来可好？", "persona")
    text = last_bot(page, "error")
    assert "臣妾" in text and "the model server closed the connection" in text, text

    send(page, "孔明向鲁肃借了多少只船？", "rag")
    assert "二十只" in last_bot(page, "route: rag").split("route:", 1)[0]


def test_page_needs_a_key_once_one_is_added_and_still_after_it_is_revoked(
    page: Any, server: tuple[ServerThread, QueuedEngine]
) -> None:
    """Keys added or revoked while the service runs count on the page's next message, as on the API; revoking
    the last key keeps the page locked (the revoked key is refused), removing the keys file opens it."""
    from service.keys import add_key, revoke_key
    from service.ui import KEY_NEEDED, KEY_WRONG

    srv, _ = server
    keys_file = srv.server.config.app.state.settings.keys_path()
    key, entry = add_key(keys_file, "page")
    try:
        send(page, "孔明向鲁肃借了多少只船？", "rag")
        assert KEY_NEEDED.split(":")[0] in last_bot(page, "error")  # (markdown renders the backticks)
        page.fill("#api-key input", "km-guessed")
        send(page, "孔明向鲁肃借了多少只船？", "rag")
        assert KEY_WRONG.split(":")[0] in last_bot(page, "not valid")
        page.fill("#api-key input", key)
        send(page, "孔明向鲁肃借了多少只船？", "rag")
        assert "二十只" in last_bot(page, "route: rag")
        revoke_key(keys_file, entry.id)
        send(page, "孔明借了多少支箭？", "rag")  # the revoked key is refused at once
        assert KEY_WRONG.split(":")[0] in last_bot(page, "not valid")
        page.fill("#api-key input", "")
        send(page, "孔明借了多少支箭？", "rag")  # no active key left: still locked, not opened
        assert KEY_NEEDED.split(":")[0] in last_bot(page, "needs an API key")
    finally:
        keys_file.unlink(missing_ok=True)  # no key was ever issued: open, as for the other tests of this module
    send(page, "孔明借了多少支箭？", "rag")
    last_bot(page, "route: rag")
