"""The Responses API's file_search tool: the vector stores it names become the turn's knowledge bases (the rag
answerer over them), and the turn's citations its file_search_call output item (and that item's stream events)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from ..answer.chat import PERSONA_PREFIX, ChatService, Reply
from ..protocol import KongmingOptions
from ..responses import FileSearchCall, FileSearchResult, ResponsesRequest

RESULTS = "file_search_call.results"  # what `include` names to have the results in the item


def file_search_options(body: ResponsesRequest) -> tuple[list[str], KongmingOptions | None]:
    """The stores the request's file_search tools name, and the chat options that search them: the rag route (a
    persona model: `both`, its voice grounded on them) unless the request forces another, their max_num_results."""
    stores, k = body.file_search()
    if not stores:
        return [], body.kongming
    opts = body.kongming or KongmingOptions()
    route = opts.route or ("both" if body.model.startswith(PERSONA_PREFIX) else "rag")
    return stores, opts.model_copy(update={"vector_store_ids": stores, "route": route, "k": opts.k or k})


async def file_search_call(
    chat: ChatService, stores: list[str], body: ResponsesRequest, messages: Sequence[dict[str, str]], reply: Reply
) -> FileSearchCall | None:
    """The file_search_call item of a turn that searched `stores` (None when it searched none): the query, and with
    include ["file_search_call.results"] the passages its answer cites. Annotations name the stores' file ids."""
    if not stores:
        return None
    files: dict[str, tuple[str, str]] = await asyncio.to_thread(chat.vector_stores.files_by_document, stores)
    query = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    results = None
    if RESULTS in (body.include or []):
        results = []
        for c in reply.citations:
            file_id, filename = files.get(c.doc_id, (c.doc_id, c.source or c.document))
            where = {"document": c.document, "chapter": c.chapter, "chapter_title": c.chapter_title}
            results.append(FileSearchResult(file_id=file_id, filename=filename, score=c.score, text=c.snippet,
                                            attributes={k: v for k, v in where.items() if v is not None}))
    call = FileSearchCall(queries=[query], results=results)
    call.set_files(files)
    return call


def search_events(event: Callable[..., bytes], search: FileSearchCall) -> list[bytes]:
    """The file_search_call item's events, output index 0, before the message's."""
    where: dict[str, Any] = {"output_index": 0, "item_id": search.id}
    started = search.model_copy(update={"status": "in_progress", "results": None})
    return [
        event("response.output_item.added", output_index=0, item=started.model_dump(mode="json")),
        event("response.file_search_call.in_progress", **where),
        event("response.file_search_call.searching", **where),
        event("response.file_search_call.completed", **where),
        event("response.output_item.done", output_index=0, item=search.model_dump(mode="json")),
    ]
