"""The opt-in sources footer: the numbered citations appended to the answer text, for clients that read only text.

LangChain, pydantic-ai, openai-agents and litellm's streaming expose only the standard fields, never the `kongming`
extension; with `"kongming": {"sources": "append"}` (or the `x-kongming-sources: append` header, or the server
setting `KONGMING_APPEND_SOURCES`) the answer ends with a blank line and "来源：[1] 《title》第N回 …" lines.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import aclosing
from typing import Literal

from ingest.headings import chapter_label

from ..engines import Completion, Delta, Message
from ..errors import BadRequest
from ..protocol import Citation, KongmingOptions

HEADER = "x-kongming-sources"  # for clients that can add a header but no body field
Language = Literal["zh", "en"]
_HAN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_LATIN = re.compile(r"[A-Za-z]")


def language_of(question: str) -> Language:
    """English when the question has Latin letters and no Chinese characters; Chinese otherwise."""
    return "en" if _LATIN.search(question) and not _HAN.search(question) else "zh"


def _where(c: Citation, lang: Language) -> str:
    title = c.document or c.source or c.doc_id
    if lang == "en":
        out = f"“{title}”"
        if c.chapter is not None:
            out += f", chapter {c.chapter}" + (f" ({c.chapter_title})" if c.chapter_title else "")
        return out
    out = f"《{title}》"
    if c.chapter is not None:
        out += chapter_label(c.chapter, c.chapter_unit) + (f" {c.chapter_title}" if c.chapter_title else "")
    return out


def footer(citations: Sequence[Citation], lang: Language) -> str:
    """"\\n\\n来源：\\n[1] 《title》第N回 …" (or "Sources:"), one line per citation; "" when there are none."""
    if not citations:
        return ""
    head = "Sources:" if lang == "en" else "来源："
    lines = [f"[{c.index}] {_where(c, lang)}" for c in citations]
    return "\n\n" + head + "\n" + "\n".join(lines)


def complete_with_sources(done: Completion, tail: str) -> Completion:
    """The completion with the footer after its text."""
    return Completion(done.text + tail, done.finish_reason, done.prompt_tokens, done.completion_tokens)


async def stream_with_sources(stream: AsyncIterator[Delta], tail: Callable[[], str]) -> AsyncIterator[Delta]:
    """The stream with the footer as its last text piece, before the piece that carries the finish reason.
    `tail` is asked only then: the citations are final once the answer is (a fallback answer changes them)."""
    async with aclosing(stream):  # type: ignore[type-var]
        async for delta in stream:
            if delta.finish_reason is None:
                yield delta
                continue
            if delta.text:
                yield Delta(delta.text)
            text = tail()
            if text:
                yield Delta(text)
            yield Delta("", delta.finish_reason, delta.prompt_tokens, delta.completion_tokens)
            return
    text = tail()  # a stream that ended without a finish piece
    if text:
        yield Delta(text)


def appended_sources(
    options: KongmingOptions | None, headers: Mapping[str, str], default: bool, messages: Sequence[Message]
) -> Language | None:
    """Whether to append the sources (and in which language): the request's `kongming.sources`, else the
    `x-kongming-sources` header, else the server's setting (`KONGMING_APPEND_SOURCES`)."""
    option: str | None = options.sources if options is not None else None
    header = headers.get(HEADER)
    if option is None and header is not None:
        option = header.strip().lower()
        if option not in ("append", "none"):
            raise BadRequest(f"{HEADER} must be 'append' or 'none', not {header!r}", param=HEADER)
    if option == "none" or (option is None and not default):
        return None
    users = [m["content"] for m in messages if m["role"] == "user"]
    return language_of(users[-1] if users else "")
