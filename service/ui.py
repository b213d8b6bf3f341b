"""The Gradio chat page at /ui: calls `ChatService.reply` like the API, streams, shows the route and citations."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, cast

from ingest.errors import IngestError
from ingest.headings import chapter_label

from .errors import ServiceError, error_body
from .keys import KeyRing
from .protocol import Citation, KongmingOptions, Route

if TYPE_CHECKING:
    from fastapi import FastAPI

    from .answer.chat import ChatService, Reply

# Gradio reads these at import: no version check, no telemetry, no hub calls (the page must work offline).
for _key, _value in (("GRADIO_ANALYTICS_ENABLED", "False"), ("HF_HUB_OFFLINE", "1"), ("HF_HUB_DISABLE_TELEMETRY", "1")):
    os.environ.setdefault(_key, _value)

log = logging.getLogger(__name__)
PATH = "/ui"
ROUTE_CHOICES = ["auto", "rag", "persona", "both"]
SNIPPET_CHARS = 120
# Gradio 6's themes ship their fonts; system fonts with CJK coverage first, so Chinese renders well anywhere.
FONTS = ["Noto Sans CJK SC", "PingFang SC", "Microsoft YaHei", "system-ui", "sans-serif"]
Turn = dict[str, str]
History = list[dict[str, Any]]


def route_line(reply: Reply) -> str:
    """`route: persona (forced) · persona: zhuge-liang — reason`, the first line under an answer."""
    d = reply.decision
    parts = [f"**route: {d.route}**" + (" (forced)" if d.forced else "")]
    if d.persona:
        parts.append(f"persona: {d.persona}")
    return " · ".join(parts) + f" — {d.reason.removeprefix(f'{d.route}: ')}"


def citation_line(c: Citation) -> str:
    where = chapter_label(c.chapter, c.chapter_unit) if c.chapter is not None else c.document
    title = f" {c.chapter_title}" if c.chapter_title else ""
    snippet = c.snippet if len(c.snippet) <= SNIPPET_CHARS else c.snippet[:SNIPPET_CHARS] + "…"
    return f"[{c.index}] {where}{title}（{c.document}）：{snippet}"


def footer(reply: Reply) -> str:
    """Markdown under the answer: route with its reason, a note if any, then the numbered sources."""
    lines = [route_line(reply)]
    if reply.note:
        lines.append(f"*{reply.note}*")
    if reply.citations:
        lines.append("**sources**")
        lines.extend(f"- {citation_line(c)}" for c in reply.citations)
    return "\n\n---\n" + "\n".join(f"{line}\n" for line in lines)


KEY_NEEDED = ("this service needs an API key: enter one in the «API key» field above "
              "(`kongming keys add` creates one)")
KEY_WRONG = "the API key is not valid (mistyped or revoked): enter an active key in the «API key» field above"
LOADING = "loading the persona model (first answer only, about a minute)…"


def key_refusal(chat: ChatService, ring: KeyRing, key: str | None) -> str | None:
    """Why the page refuses this message, or None: chat on the page needs a key exactly when the API's chat
    does, checked against the key ring on every message (keys added or revoked while the service runs count)."""
    if not ring.chat_needs_key(chat.settings.chat_auth):
        return None
    key = (key or "").strip()
    if not key:
        return KEY_NEEDED
    return None if ring.identify(key) is not None else KEY_WRONG


def placeholder(reply: Reply) -> str:
    """What the answer shows until its first words: a note when an in-process model loads first."""
    return LOADING if reply.engine is not None and getattr(reply.engine, "loaded", True) is False else "…"


def make_respond(chat: ChatService, ring: KeyRing) -> Any:
    async def respond(
        message: str, history: History, conversation: list[Turn], route: str, persona: str | None, key: str = ""
    ) -> AsyncIterator[tuple[str, History, list[Turn]]]:
        """Streams one answer into the chat; `conversation` holds the plain turns sent to the service (the
        chat shows answers with their route and sources, which must not go back to the model)."""
        if not message.strip():
            return
        asked = [*conversation, {"role": "user", "content": message}]
        history = [*history, {"role": "user", "content": message}, {"role": "assistant", "content": "…"}]
        refused = key_refusal(chat, ring, key)
        if refused is not None:
            history[-1] = {"role": "assistant", "content": f"⚠️ error: {refused}"}
            yield message, history, conversation  # the message stays in the box to send again with a key
            return
        yield "", history, conversation
        text = ""
        try:
            forced = None if route == "auto" else cast(Route, route)
            options = KongmingOptions(route=forced, persona=persona or None)
            reply = await chat.reply(asked, options=options)
            if (waiting := placeholder(reply)) != "…":
                history[-1] = {"role": "assistant", "content": waiting}
                yield "", history, conversation
            async for delta in reply.stream():
                if delta.text:
                    text += delta.text
                    history[-1] = {"role": "assistant", "content": text}
                    yield "", history, conversation
        except (ServiceError, IngestError) as exc:
            message = error_body(exc)[1].error.message  # what the API would answer
            log.info("chat page: %s", message)
            shown = (text + "\n\n") if text else ""
            history[-1] = {"role": "assistant", "content": f"{shown}⚠️ error: {message}"}
            yield "", history, conversation  # the failed turn is not kept for the next request
            return
        except Exception:
            log.exception("chat page: unexpected error")
            history[-1] = {"role": "assistant", "content": "⚠️ internal error: see the service log"}
            yield "", history, conversation
            return
        history[-1] = {"role": "assistant", "content": text + footer(reply)}
        yield "", history, [*asked, {"role": "assistant", "content": text}]

    return respond


def build_blocks(chat: ChatService, ring: KeyRing | None = None) -> Any:
    import gradio as gr

    personas = [(f"{p.display_name} ({p.name})", p.name) for p in chat.settings.personas]
    respond = make_respond(chat, ring or KeyRing(chat.settings))

    theme = gr.themes.Default(font=FONTS, font_mono=["ui-monospace", "monospace"])
    with gr.Blocks(title="kongming", analytics_enabled=False) as blocks:
        gr.Markdown("## kongming\n知识库问答（rag）· 人物对话（persona）· 两者结合（both）；auto：由路由器决定。")
        with gr.Row():
            route = gr.Radio(ROUTE_CHOICES, value="auto", label="route", elem_id="route")
            persona = gr.Dropdown(personas, value=chat.settings.default_persona, label="persona", elem_id="persona")
            key = gr.Textbox(label="API key", type="password", elem_id="api-key",
                             placeholder="needed once the service has keys (kongming keys add)")
        chatbot = gr.Chatbot(label="chat", elem_id="chat", height=520, buttons=["copy"], feedback_options=None)
        conversation = gr.State([])
        with gr.Row():
            box = gr.Textbox(placeholder="输入消息，回车发送", show_label=False, scale=8, elem_id="message")
            send = gr.Button("send", variant="primary", scale=1, elem_id="send")
        inputs = [box, chatbot, conversation, route, persona, key]
        outputs = [box, chatbot, conversation]
        # The service queues work per engine itself; Gradio's default (one event at a time) would serialize users.
        for trigger in (box.submit, send.click):
            trigger(respond, inputs, outputs, concurrency_limit=None, api_visibility="private")
        # The chat's own clear (bin) button empties the shown chat; forget the plain turns with it.
        chatbot.clear(lambda: [], None, conversation, api_visibility="private")
    return blocks, theme


def mount_ui(app: FastAPI, chat: ChatService) -> FastAPI:
    """Mounts the chat page at /ui on the service's app (no share link, no analytics, no SSR node server)."""
    import gradio as gr

    blocks, theme = build_blocks(chat, getattr(app.state, "keys", None))
    return gr.mount_gradio_app(
        app,
        blocks,
        path=PATH,
        footer_links=["settings"],
        theme=theme,
        ssr_mode=False,
        mcp_server=False,
    )
