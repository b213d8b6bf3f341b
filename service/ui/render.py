"""How a chat answer reads on the page: its citations renumbered to what it cites, the route line with the router's
reason in Chinese, the sources under it, a mark on an answer cut by the token limit."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from ingest.headings import chapter_label

from ..protocol import CITATION_MARKER, Citation

if TYPE_CHECKING:
    from ..answer.chat import Reply

SNIPPET_CHARS = 120
TRUNCATED = "…（回答已截断）"  # after an answer that hit max_tokens (finish_reason "length")

# The router's reasons (service/answer/router.py _EXPLAIN and its fixed phrases) as a Chinese page says them.
REASONS_ZH: dict[str, str] = {
    "names the persona": "提到了人物", "does not name the persona": "没有提到人物",
    "speaks to 'you'": "以“你”相称", "does not speak to 'you'": "没有以“你”相称",
    "uses a form of address (丞相/先生...)": "用了称呼（丞相/先生…）", "uses no form of address": "没有用称呼",
    "is a greeting": "是问候", "is not a greeting": "不是问候",
    "asks a factual question": "问的是事实", "asks no factual question": "不是事实问题",
    "asks for an opinion, advice or feelings": "征求看法、建议或感受", "asks for no opinion": "没有征求看法",
    "asks about the persona's own past": "问人物自己的经历",
    "does not ask about the persona's past": "没有问人物的经历",
    "refers to the novel or a chapter": "提到小说或章回", "does not refer to the novel": "没有提到小说",
    "names people/places of the knowledge base": "提到知识库里的人名地名",
    "names nothing in the knowledge base": "没有提到知识库里的人名地名",
    "its words match the knowledge base": "用词与知识库吻合",
    "its words barely match the knowledge base": "用词与知识库几乎不吻合",
    "is long": "消息较长", "is short": "消息较短", "is in English": "用英文", "is in Chinese": "用中文",
    "continues a conversation": "接着前面的对话", "opens the conversation": "开启新对话",
    "is a short follow-up": "是简短的追问", "is not a short follow-up": "不是简短的追问",
    "asks the conversation to go on (the route of the message before)": "请接着讲（沿用上一条消息的路由）",
    "names the persona without speaking to him": "以第三人称提到角色",
    "does not speak of the persona in the third person": "没有以第三人称提到角色",
    "resembles factual questions": "像事实类问题", "does not resemble factual questions": "不像事实类问题",
    "resembles conversation with the persona": "像与人物的对话",
    "does not resemble chat with the persona": "不像与人物的对话",
    "resembles questions to the persona about events": "像向人物询问往事",
    "does not resemble questions to the persona": "不像向人物提问",
    "forced by the request": "由请求指定", "no strong signal, closest route": "没有明显信号，取最接近的路由",
}  # fmt: skip
_NAMES = re.compile(r"^(.*?) \(([^()]*)\)$")  # "names people/places of the knowledge base (刘备、关羽)"


def reason_zh(reason: str, route: str) -> str:
    """The router's reason (`route: phrase; phrase`) in Chinese; a phrase without a translation stays as it is."""
    body = reason.removeprefix(f"{route}: ")
    if body.startswith("fine-tuned model "):
        return "微调模型 " + body.removeprefix("fine-tuned model ")
    parts = []
    for part in body.split("; "):
        before = ""
        if part.startswith("previous message "):
            before, part = "上一条消息", part.removeprefix("previous message ")
        if part.startswith("answered by fine-tuned model "):  # a fine-tuned model deployed as the persona
            parts.append("由微调模型 " + part.removeprefix("answered by fine-tuned model ") + " 回答")
            continue
        names = ""
        if (m := _NAMES.match(part)) and m.group(1) in REASONS_ZH:
            part, names = m.group(1), f"（{m.group(2)}）"
        parts.append(before + REASONS_ZH.get(part, part) + names)
    return "；".join(parts)


def cited_sources(text: str, citations: list[Citation], route: str) -> tuple[str, list[Citation]]:
    """(the answer with its markers renumbered 1, 2, … in order of first use, the sources it cites so renumbered).

    An answer that cites nothing lists nothing on `both` (the persona spoke without the passages) and every
    passage, numbered in turn, on `rag` (a model that writes no markers still answered from them)."""
    by_index = {c.index: c for c in citations}
    order: list[int] = []
    for m in CITATION_MARKER.finditer(text):
        n = int(m.group(1))
        if n in by_index and n not in order:
            order.append(n)
    if not order:
        kept = [] if route == "both" else citations
        return text, [c.model_copy(update={"index": i}) for i, c in enumerate(kept, 1)]
    new = {old: i for i, old in enumerate(order, 1)}
    marker = CITATION_MARKER
    renumbered = marker.sub(lambda m: f"[{new[int(m.group(1))]}]" if int(m.group(1)) in new else m.group(0), text)
    return renumbered, [by_index[old].model_copy(update={"index": i}) for old, i in new.items()]


def route_line(reply: Reply) -> str:
    """`**route: persona**（指定）· persona: zhuge-liang — 原因`, the first line under an answer."""
    d = reply.decision
    parts = [f"**route: {d.route}**" + ("（指定）" if d.forced else "")]
    if d.persona:
        parts.append(f"persona: {d.persona}")
    return " · ".join(parts) + f" — {reason_zh(d.reason, d.route)}"


def citation_line(c: Citation) -> str:
    """`[1] 第46回 title（document）：snippet…` (the snippet cut to SNIPPET_CHARS)."""
    where = chapter_label(c.chapter, c.chapter_unit) if c.chapter is not None else c.document
    title = f" {c.chapter_title}" if c.chapter_title else ""
    snippet = c.snippet if len(c.snippet) <= SNIPPET_CHARS else c.snippet[:SNIPPET_CHARS] + "…"
    return f"[{c.index}] {where}{title}（{c.document}）：{snippet}"


def shown_answer(reply: Reply, text: str, finish_reason: str | None) -> str:
    """The whole message the page shows: the answer (renumbered, marked when cut), then directly under it the
    route line, a note if any, and the numbered sources it cites."""
    text, cited = cited_sources(text, reply.citations, reply.decision.route)
    if finish_reason == "length":
        text = text.rstrip() + TRUNCATED
    lines = [route_line(reply)]
    if reply.note:
        lines.append(f"*{reply.note}*")
    if cited:
        lines.append("**sources**")
        lines.extend(f"{citation_line(c)}" for c in cited)
    # one markdown paragraph per line, no rule between answer and route line (no blank band)
    return text.rstrip() + "\n\n" + "  \n".join(lines)


def store_label(store: dict[str, Any]) -> str:
    """A knowledge base as its dropdown shows it (a vector store object of GET /v1/vector_stores): its name and its
    files, those still being embedded named (searchable by keyword already): `sanguo · 1 file, 1 embedding`."""
    counts = store["file_counts"]
    total = int(counts.get("total", counts.get("completed", 0)))
    parts = [f"{total} file{'' if total == 1 else 's'}"]
    if counts.get("in_progress"):
        parts.append(f"{counts['in_progress']} embedding")
    if counts.get("failed"):
        parts.append(f"{counts['failed']} failed")
    return f"{store.get('name') or store['id']} · {', '.join(parts)}"
