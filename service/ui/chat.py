"""The Chat tab: calls `ChatService.reply` like the API, streams, shows the route, its reason and the sources."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, cast

from ingest.errors import IngestError

from ..errors import ServiceError, error_body
from ..keys import KeyRing
from ..protocol import KongmingOptions, Route
from .render import shown_answer, store_label

if TYPE_CHECKING:
    from ..answer.chat import ChatService, Reply

log = logging.getLogger(__name__)
ROUTE_CHOICES = ["auto", "rag", "persona", "both"]
ROUTED = "kongming"  # the chat's default model: routed per message (route and persona chosen beside it)
Turn = dict[str, str]
History = list[dict[str, Any]]

KEY_NEEDED = ("this service needs an API key: enter one in the «API key» field above "
              "(`kongming keys add` creates one)")
KEY_WRONG = "the API key is not valid (mistyped or revoked): enter an active key in the «API key» field above"
LOADING = "正在加载人物模型（仅第一次回答，约一分钟）… loading the persona model"
# After the streamed words until the answer is complete: the truncation mark and the route line come only with the
# finished message, and without this a long answer still being written read as a finished one without them.
WRITING = " ▍"
# The chat keeps the answer's start in view, at sending (once the question is shown) and when the answer is
# complete: Gradio's autoscroll left a long answer's reader on the source list at its end.
SCROLL_TO_ANSWER_JS = """() => { setTimeout(() => {
  const bots = document.querySelectorAll('#chat [data-testid="bot"]');
  const last = bots[bots.length - 1];
  let box = last && last.parentElement;
  while (box && !(box.scrollHeight > box.clientHeight + 4 && getComputedStyle(box).overflowY !== 'visible'))
    box = box.parentElement;
  if (box) box.scrollTop += last.getBoundingClientRect().top - box.getBoundingClientRect().top - 8;
}, DELAY); }"""


def key_refusal(chat: ChatService, ring: KeyRing, key: str | None) -> str | None:
    """Why the page refuses this message, or None: chat on the page needs a key exactly when the API's chat
    does, checked against the key ring on every message (keys added or revoked while the service runs count)."""
    if not ring.chat_needs_key(chat.settings.chat_auth):
        return None
    key = (key or "").strip()
    if not key:
        return KEY_NEEDED
    return None if ring.identify(key) is not None else KEY_WRONG


def loading(reply: Reply) -> bool:
    """Whether the answer waits for an in-process model to load first: the engine's own `loaded`, or, for one
    adapter on a shared base (engines.adapters.AdapterEngine), the base's and whether the adapter is on it."""
    engine = reply.engine
    if engine is None:
        return False
    host = getattr(engine, "host", None)
    if host is None:
        return getattr(engine, "loaded", True) is False
    name, path = getattr(engine, "adapter_name", None), getattr(engine, "adapter_path", None)
    return getattr(host, "loaded", True) is False or (name is not None and host.adapters.get(name) != path)


def placeholder(reply: Reply) -> str:
    """What the answer shows until its first words: a note when an in-process model loads first."""
    return LOADING if loading(reply) else "…"


def make_respond(chat: ChatService, ring: KeyRing) -> Any:
    async def respond(
        message: str, history: History, conversation: list[Turn], route: str, persona: str | None, key: str = "",
        model: str = ROUTED, store: str | None = None,
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
        text, finish = "", None
        try:
            forced = None if route == "auto" else cast(Route, route)
            stores = [store] if store and store != default_store(chat) else None  # the default: the server's own
            options = KongmingOptions(route=forced, persona=persona or None, vector_store_ids=stores)
            reply = await chat.reply(asked, model=model or ROUTED, options=options)
            if (waiting := placeholder(reply)) != "…":
                history[-1] = {"role": "assistant", "content": waiting}
                yield "", history, conversation
            async for delta in reply.stream():
                finish = delta.finish_reason or finish
                if delta.text:
                    text += delta.text
                    history[-1] = {"role": "assistant", "content": text + WRITING}
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
        history[-1] = {"role": "assistant", "content": shown_answer(reply, text, finish)}
        yield "", history, [*asked, {"role": "assistant", "content": text}]

    return respond


def model_choices(chat: ChatService) -> list[tuple[str, str]]:
    """The chat's model choice: routed (route and persona beside it), then every chat model jobs fine-tuned."""
    try:
        tuned = [(f"{m.id}（{m.task}）", m.id) for m in chat.engines.registry.list()]
    except (OSError, sqlite3.Error) as exc:  # the built-in routes still answer
        log.warning("fine-tuned model registry unreadable: %s", exc)
        tuned = []
    return [("kongming（按路由 route / persona）", ROUTED), *tuned]


def default_store(chat: ChatService) -> str:
    """The vector store the chat retrieves from unless another is chosen (the `ingest` CLI's collection)."""
    return "vs_" + chat.kb.settings.collection


def make_store_choices(chat: ChatService, ring: KeyRing, state: Any) -> Any:
    def store_choices(key: str, chosen: str | None) -> Any:
        """The knowledge bases (vector stores) the chat may answer from, for whoever may chat (key as for chat)."""
        import gradio as gr

        vs = getattr(state, "vector_stores", None)
        if vs is None or key_refusal(chat, ring, key) is not None:
            return gr.update()
        try:
            stores = vs.list()
        except (ServiceError, IngestError, OSError) as exc:
            log.warning("chat page: vector stores unreadable: %s", exc)
            return gr.update()
        choices = [(store_label(s), s["id"]) for s in stores]
        ids = [s["id"] for s in stores]
        return gr.update(choices=choices, value=chosen if chosen in ids else default_store(chat))

    return store_choices


def build_chat_tab(gr: Any, chat: ChatService, ring: KeyRing, key: Any, state: Any = None) -> Any:
    """The tab's components and events; returns the model dropdown (the Fine-tune tab's deploy fills it)."""
    personas = [(f"{p.display_name} ({p.name})", p.name) for p in chat.settings.personas]
    respond = make_respond(chat, ring)
    with gr.Row():
        route = gr.Radio(ROUTE_CHOICES, value="auto", label="路由 route", elem_id="route")
        persona = gr.Dropdown(personas, value=chat.settings.default_persona, label="人物 persona", elem_id="persona")
        model = gr.Dropdown(model_choices(chat), value=ROUTED, label="模型 model", elem_id="model")
        store = gr.Dropdown([default_store(chat)], value=default_store(chat), label="知识库 knowledge base",
                            elem_id="chat-store", allow_custom_value=True)  # fmt: skip
    # No floating label over the messages: it covered the first line of scrolled text.
    chatbot = gr.Chatbot(show_label=False, elem_id="chat", height=520, buttons=["copy"], feedback_options=None,
                         autoscroll=False)
    conversation = gr.State([])
    with gr.Row():
        box = gr.Textbox(placeholder="输入消息，回车发送", show_label=False, scale=8, elem_id="message")
        send = gr.Button("发送 send", variant="primary", scale=1, elem_id="send")
    inputs = [box, chatbot, conversation, route, persona, key, model, store]
    outputs = [box, chatbot, conversation]
    # The service queues work per engine itself; Gradio's default (one event at a time) would serialize users.
    for trigger in (box.submit, send.click):
        trigger(None, None, None, js=SCROLL_TO_ANSWER_JS.replace("DELAY", "400"))
        trigger(respond, inputs, outputs, concurrency_limit=None, api_visibility="private").then(
            None, None, None, js=SCROLL_TO_ANSWER_JS.replace("DELAY", "150"))
    # The chat's own clear (bin) button empties the shown chat; forget the plain turns with it.
    chatbot.clear(lambda: [], None, conversation, api_visibility="private")
    # the knowledge bases the KB tab made: listed when a key is entered and when the list is opened
    stores = make_store_choices(chat, ring, state)
    key.change(stores, [key, store], store, api_visibility="private", show_progress="hidden")
    store.focus(stores, [key, store], store, api_visibility="private", show_progress="hidden")
    return model
