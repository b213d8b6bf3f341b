"""The Gradio page's Chat tab in a real headless Chromium: streamed answers with their route, reason (in Chinese)
and citations numbered without gaps; a long answer left in view, a cut one marked; the layout on a phone."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from service.engines import Delta
from service.errors import UpstreamError
from tests.conftest import NOVEL
from tests.service.conftest import ServerThread
from tests.service.fakes import FailingEngine, QueuedEngine
from tests.service.uipage import WAIT_MS, chromium, last_bot, offline_page, screenshot, send

pytestmark = [
    pytest.mark.integration,
    # gradio 6's queue calls pandas options that pandas 3 deprecates (Pandas4Warning): not ours to fix
    pytest.mark.filterwarnings("ignore::DeprecationWarning:gradio.queueing"),
]

PERSONA_REPLY = "亮以为：借箭之计，在于知天时、识人心。雾起之日，便是功成之时。"


class LimitedEngine(QueuedEngine):
    """A queued engine that, like a model, stops at max_tokens (a token = 4 characters here) with "length"."""

    async def stream(self, messages: Any, params: Any) -> AsyncIterator[Delta]:
        text = self._next(messages)
        cut = text[: params.max_tokens * 4]
        for i in range(0, len(cut), self.piece):
            yield Delta(cut[i : i + self.piece])
        yield Delta("", "length" if len(cut) < len(text) else "stop", 10, len(cut) // 4)


def broken_mid_answer() -> FailingEngine:
    """A persona engine whose model server breaks the connection after the first words."""
    return FailingEngine(UpstreamError("the model server closed the connection"), first=("臣妾",))


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from chromium()


@pytest.fixture(scope="module")
def server(kb_settings: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerThread, QueuedEngine]]:
    """The real app (API + page) on uvicorn; 诸葛亮 answers from a slow queue, 甄嬛's model server is broken."""
    from service.app import build_chat_service, create_app
    from service.settings import get_service_settings

    zhuge = LimitedEngine("zhuge-liang", piece=2, delay=0.15)
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
    yield from offline_page(browser, server[0].url, "#message textarea")


# Pixels between the bottom of the answer's last paragraph and the top of the route line, in the last answer.
GAP_JS = """() => {
  const bots = document.querySelectorAll('#chat [data-testid="bot"]');
  const ps = [...bots[bots.length - 1].querySelectorAll('p')];
  const i = ps.findIndex(p => p.innerText.startsWith('route:'));
  return ps[i].getBoundingClientRect().top - ps[i - 1].getBoundingClientRect().bottom;
}"""
# Where the last answer sits in the chat's scrolled view, and what is drawn at the view's top-left corner.
VIEW_JS = """() => {
  const bots = document.querySelectorAll('#chat [data-testid="bot"]');
  const bot = bots[bots.length - 1].getBoundingClientRect();
  let box = bots[bots.length - 1].parentElement;
  while (box && !(box.scrollHeight > box.clientHeight + 4 && getComputedStyle(box).overflowY !== 'visible'))
    box = box.parentElement;
  const view = box.getBoundingClientRect();
  const corner = document.elementFromPoint(view.left + 16, view.top + 10);
  return {botTop: bot.top, viewTop: view.top, scrolled: box.scrollTop,
          labels: document.querySelectorAll('#chat [data-testid="block-label"]').length,
          covered: corner ? corner.closest('label, [data-testid="block-label"]') !== null : true};
}"""


def chapter_sentences(chapter: str) -> list[str]:
    body = NOVEL.split(chapter, 1)[1].split("正文", 1)[0].split("作品仅供", 1)[0]
    return [s.strip("　 \n“”") for s in re.split(r"[。！？\n]", body) if len(s.strip("　 \n“”")) >= 8]


def test_rag_answer_shows_route_reason_and_citations(page: Any, tmp_path: Path) -> None:
    send(page, "孔明借了多少支箭？", "rag")
    text = last_bot(page, "sources")
    answer, meta = text.split("route:", 1)
    assert "十万支箭" in answer or "十余万支" in answer, text
    cited = [int(n) for n in re.findall(r"\[(\d+)\]", answer)]
    assert cited and sorted(set(cited)) == list(range(1, max(cited) + 1)), f"numbered with gaps: {answer}"
    assert meta.startswith(" rag（指定）") and "由请求指定" in meta, meta
    sources = meta.split("sources", 1)[1]
    listed = [int(n) for n in re.findall(r"^\[(\d+)\]", sources, re.M)]
    assert listed == sorted(set(cited)), f"the sources listed are those the answer cites: {sources}"
    assert "第3回 草船借箭 周瑜用计" in sources, sources
    assert any(s in sources for s in chapter_sentences("第三回")), f"no snippet of chapter 3 in: {sources}"
    assert page.locator("#message textarea").input_value() == "", "the box is cleared after sending"
    gap = page.evaluate(GAP_JS)
    assert 0 <= gap < 16, f"{gap}px of blank between the answer and its route line"
    screenshot(page, tmp_path, "chat_rag_citations")


def test_persona_answer_streams_and_next_turn_sends_plain_history(
    page: Any, server: tuple[ServerThread, QueuedEngine]
) -> None:
    _, zhuge = server
    zhuge.replies.extend([PERSONA_REPLY, "足下过誉了。"])
    send(page, "先生，借箭之时可曾担心？", "persona")
    text = last_bot(page, "route: persona")
    from service.ui.chat import WRITING

    # an unfinished answer ends with the «still writing» mark
    states = [s.removesuffix(WRITING.strip()).rstrip() for s in page.evaluate("window.__states") if s]
    partial = {s for s in states if s and s != PERSONA_REPLY and PERSONA_REPLY.startswith(s)}
    assert len(partial) >= 2, f"expected the answer to arrive in pieces, saw {states}"
    assert text.startswith(PERSONA_REPLY), text
    assert "route: persona（指定）" in text and "persona: zhuge-liang" in text, text
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


def test_a_long_answer_cut_by_the_limit_is_marked_and_left_in_view(
    page: Any, server: tuple[ServerThread, QueuedEngine], tmp_path: Path
) -> None:
    """A persona answer past its 96 tokens ends with the mark; after it the chat shows the answer (its start at
    the view's top), not the end of the message, and nothing is drawn over the first line of the view."""
    from service.ui.render import TRUNCATED

    _, zhuge = server
    zhuge.replies.append("\n\n".join(f"第{i}条：亮以为借箭之计，在于知天时。" for i in range(1, 40)))
    send(page, "先生，借箭之计如何？", "persona")
    text = last_bot(page, "route: persona")
    assert TRUNCATED in text and text.split("route:")[0].rstrip().endswith(TRUNCATED), text
    page.wait_for_timeout(600)  # the scroll after the answer runs 150 ms after it is complete
    view = page.evaluate(VIEW_JS)
    assert view["scrolled"] > 0, "a long answer overflows the chat"
    assert view["viewTop"] <= view["botTop"] <= view["viewTop"] + 40, f"the answer's start is not in view: {view}"
    assert view["labels"] == 0 and not view["covered"], f"a label is drawn over the scrolled messages: {view}"
    screenshot(page, tmp_path, "chat_long_answer_cut")


def test_on_a_phone_the_persona_name_is_not_under_the_dropdown_arrow(
    browser: Any, server: tuple[ServerThread, QueuedEngine], tmp_path: Path
) -> None:
    srv, _ = server
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True)
    page = context.new_page()
    page.goto(srv.url + "/ui/")
    page.wait_for_selector("#persona input", timeout=WAIT_MS)
    room = page.evaluate("""() => {
      const input = document.querySelector('#persona input');
      const icon = document.querySelector('#persona .icon-wrap');
      const style = getComputedStyle(input);
      const ctx = document.createElement('canvas').getContext('2d');
      ctx.font = style.font;
      const textEnd = input.getBoundingClientRect().left + parseFloat(style.paddingLeft)
                      + Math.min(ctx.measureText(input.value).width, input.clientWidth);
      const textRight = input.getBoundingClientRect().right - parseFloat(style.paddingRight);
      return {value: input.value, iconLeft: icon.getBoundingClientRect().left, textEnd, textRight};
    }""")
    screenshot(page, tmp_path, "chat_phone_width")
    context.close()
    assert room["value"].startswith("诸葛亮"), room
    assert room["textRight"] <= room["iconLeft"] + 1, f"the input's text area runs under the arrow: {room}"
