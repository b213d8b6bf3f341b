"""The Gradio page at /ui: the Chat tab beside the Knowledge-base and Fine-tune consoles, mounted on the service."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ..keys import KeyRing
from .chat import KEY_NEEDED, KEY_WRONG, LOADING, make_respond
from .render import citation_line

if TYPE_CHECKING:
    from fastapi import FastAPI

    from ..answer.chat import ChatService

# Gradio reads these at import: no version check, no telemetry, no hub calls (the page must work offline).
for _key, _value in (("GRADIO_ANALYTICS_ENABLED", "False"), ("HF_HUB_OFFLINE", "1"), ("HF_HUB_DISABLE_TELEMETRY", "1")):
    os.environ.setdefault(_key, _value)

__all__ = ["KEY_NEEDED", "KEY_WRONG", "LOADING", "PATH", "build_blocks", "citation_line", "make_respond", "mount_ui"]
PATH = "/ui"
# Gradio 6's themes ship their fonts; system fonts with CJK coverage first, so Chinese renders well anywhere.
FONTS = ["Noto Sans CJK SC", "PingFang SC", "Microsoft YaHei", "system-ui", "sans-serif"]
# On a phone the dropdowns' arrow sat over the end of the chosen name: keep the text clear of it.
CSS = """
.gradio-container .wrap-inner .secondary-wrap input { padding-right: 1.75rem; text-overflow: ellipsis; }
.gradio-container .wrap-inner .secondary-wrap .icon-wrap { pointer-events: none; }
#chat .message-content p { margin-block: 0.35em; }
"""


def build_blocks(chat: ChatService, ring: KeyRing | None = None, state: Any = None) -> Any:
    """The page (gr.Blocks) and its theme. `state`: the app's state (the KB tab's vector stores, the jobs worker)."""
    import gradio as gr

    from .chat import build_chat_tab, model_choices
    from .finetune import build_finetune_tab
    from .kb import build_kb_tab

    ring = ring or KeyRing(chat.settings)
    theme = gr.themes.Default(font=FONTS, font_mono=["ui-monospace", "monospace"])
    with gr.Blocks(title="kongming", analytics_enabled=False) as blocks:
        gr.Markdown("## kongming\n知识库问答（rag）· 人物对话（persona）· 两者结合（both）；auto：由路由器决定。")
        key = gr.Textbox(label="API key", type="password", elem_id="api-key",
                         placeholder="chat: needed once the service has keys (kongming keys add); "
                                     "knowledge base and fine-tune: always")
        with gr.Tabs():
            with gr.Tab("对话 Chat", id="chat-tab", elem_id="chat-tab"):
                model = build_chat_tab(gr, chat, ring, key, state)
            with gr.Tab("知识库 Knowledge base", id="kb-tab", elem_id="kb-tab"):
                build_kb_tab(gr, chat, ring, key, state)
            with gr.Tab("微调 Fine-tune", id="ft-tab", elem_id="ft-tab"):
                build_finetune_tab(gr, chat, ring, key, model, state)
        # the models jobs fine-tuned since the service started are choices on every new page
        blocks.load(lambda: gr.update(choices=model_choices(chat)), None, model, api_visibility="private")
    return blocks, theme


def mount_ui(app: FastAPI, chat: ChatService) -> FastAPI:
    """Mounts the page at /ui on the service's app (no share link, no analytics, no SSR node server)."""
    import gradio as gr

    blocks, theme = build_blocks(chat, getattr(app.state, "keys", None), app.state)
    return gr.mount_gradio_app(
        app, blocks, path=PATH, footer_links=["settings"], theme=theme, css=CSS, ssr_mode=False, mcp_server=False,
    )
