"""The service's view of the knowledge base: lazy hybrid retriever, query embeddings, names and citations."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, TypeVar

from ingest.errors import IngestError
from ingest.retrieval import Filters, RetrievedChunk, Retriever
from ingest.settings import IngestSettings

from ..protocol import Citation

log = logging.getLogger(__name__)
T = TypeVar("T")
SNIPPET_CHARS = 160


class KnowledgeBase:
    """Opens the retriever on first use; every call runs on one worker thread (the embedder and Chroma
    client are not shared across threads), so the event loop never blocks on retrieval."""

    def __init__(self, settings: IngestSettings, retriever: Retriever | None = None) -> None:
        self.settings = settings
        self._retriever = retriever
        self._opener: Callable[[], Retriever] | None = None
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kb")
        self.error: str | None = None
        self.missing = False  # the knowledge base named does not exist (a mistyped name), as `error` says

    @property
    def retriever(self) -> Retriever:
        with self._lock:
            if self._retriever is None:
                self._retriever = self._opener() if self._opener else Retriever(self.settings)
            return self._retriever

    def open_with(self, opener: Callable[[], Retriever]) -> None:
        """Take the retriever from `opener` when first needed (the app's, shared with the vector stores: one that
        sees this process's background writes and never reopens the store under them)."""
        self._opener = opener

    async def run(self, fn: Any, *args: Any) -> Any:
        """`fn(*args)` on the knowledge base's worker thread. Its errors pass through as they are: errors.py says
        what a client sees (a store that cannot be reached or written is a 503)."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def available(self) -> bool:
        """True when the collection has documents; false (with `error` set) when it is empty, unreadable or does not
        exist (a mistyped KONGMING_COLLECTION: opening it would create an empty knowledge base under that name)."""
        try:
            if self._retriever is None and not self._exists():
                return False
            docs = self.retriever.documents
        except (IngestError, OSError) as exc:
            self.error = str(exc)
            return False
        if not docs:
            self.error = (
                f"knowledge base {self.settings.collection!r} is empty: add documents with `ingest add FILES`"
            )
            return False
        self.error = None
        return True

    def embed_queries(self, texts: list[str]) -> Any:
        """Query vectors, one row per text: the retriever's (names it knows appended) once the knowledge base is
        open; the embedder's alone before, so that routing a message never opens, and so creates, a knowledge base
        that does not exist."""
        if self._retriever is None and not self.available():
            from ingest.embedding import get_embedder

            return get_embedder(self.settings.embed_model).embed_queries(texts)
        return self.retriever.embed_queries(texts)

    def _exists(self) -> bool:
        from ingest.client import missing_knowledge_base

        missing = missing_knowledge_base(self.settings)
        self.missing = bool(missing)
        if missing:
            self.error = (f"{missing}: add documents with `ingest add FILES --collection {self.settings.collection}` "
                          "or upload them on the page")
        return not missing

    def entities(self) -> frozenset[str]:
        return self.retriever.entities if self.available() else frozenset()

    def search(
        self, query: str, k: int, filters: Filters | None = None, embedding: Any = None, after: str = ""
    ) -> list[RetrievedChunk]:
        """The `k` passages for `query`; with `after` (a sentence the last answer quoted: the turn asks what happened
        next), from the chapter that sentence is in onwards, unless `filters` set where chapters start."""
        if not self.available():
            return []
        filters = filters or Filters()
        if after and filters.chapter_min is None:
            seen = self.retriever.retrieve(after, 1, filters)
            chapter = seen[0].metadata.get("chapter") if seen else None
            if isinstance(chapter, int):  # and of that chapter, the passages from the sentence's on
                hits = self.retriever.retrieve(query, k + 5, replace(filters, chapter_min=chapter),
                                               query_embedding=embedding)
                return [h for h in hits if not _earlier(h, seen[0])][:k]
        return self.retriever.retrieve(query, k, filters, query_embedding=embedding)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _earlier(hit: RetrievedChunk, anchor: RetrievedChunk) -> bool:
    """Whether `hit` comes before `anchor` in the same document and chapter (by chunk index)."""
    a, h = anchor.metadata, hit.metadata
    same = (h.get("doc_id"), h.get("chapter")) == (a.get("doc_id"), a.get("chapter"))
    return same and int(h.get("chunk_index") or 0) < int(a.get("chunk_index") or 0)


def source_name(source: object) -> str:
    """The file name of a document's source: the server's folders never leave it (responses, the page)."""
    return str(source or "").replace("\\", "/").rsplit("/", 1)[-1]


def citations(
    hits: list[RetrievedChunk], titles: dict[str, str] | None = None, used: Sequence[int] | None = None,
    quoted: str = "",
) -> list[Citation]:
    """One citation per passage, numbered from 1; with `used` (1-based passage ranks, as an extractive answer's
    markers list them) only those passages, numbered 1, 2… in that order as the text marks them. A snippet is the
    passage's start, or with `quoted` (the extractive answer, `sentence[1]sentence[2]`) the passage from the first
    sentence the answer quotes from it ("…" before it): what the reader checks the quote against."""
    if used is not None:
        found = citations(hits, titles)
        out = []
        for i, n in enumerate(used, start=1):
            text = hits[n - 1].text.strip().replace("\n", " ")
            start = quote_start(text, [q for q, m in CITED.findall(quoted) if int(m) == i])
            update: dict[str, object] = {"index": i}
            if start:
                update["snippet"] = "…" + _cut(text[start:])
            out.append(found[n - 1].model_copy(update=update))
        return out
    out = []
    for i, h in enumerate(hits, start=1):
        m = h.metadata
        snippet = h.text.strip().replace("\n", " ")
        out.append(
            Citation(
                index=i,
                doc_id=str(m.get("doc_id", "")),
                document=str(m.get("title") or m.get("doc_title") or (titles or {}).get(str(m.get("doc_id")), "")),
                source=source_name(m.get("source")),
                chapter=h.chapter,
                chapter_unit=m.get("chapter_unit") or None,
                chapter_title=m.get("chapter_title") or None,
                snippet=_cut(snippet),
                score=round(h.score, 6),
                chunk_id=h.chunk_id,
            )
        )
    return out


CITED = re.compile(r"([^\[\]]+)\[(\d+)\]")  # an extractive answer's quote and the citation number after it
MIN_QUOTE = 6  # characters of a quote that must be found in the passage
SENTENCE_TAIL = set("。！？；，、：）」』”.!?;,:)")


def quote_start(text: str, quotes: Sequence[str]) -> int:
    """Where in `text` the first of `quotes` begins (its longest tail of MIN_QUOTE characters or more that `text`
    holds: an answer's lead, 孔秀。, comes before the first quote), whitespace aside (a quote of two sentences
    joins them without the line break between); 0 when none is found."""
    where = [i for i, c in enumerate(text) if not c.isspace()]
    flat = "".join(text[i] for i in where)
    starts = []
    for q in quotes:
        q = "".join(q.split())
        for k in range(max(0, len(q) - MIN_QUOTE + 1)):
            at = flat.find(q[k:])
            if at >= 0:  # (a tail that starts with the lead's full stop starts after it)
                while at < len(flat) - 1 and flat[at] in SENTENCE_TAIL:
                    at += 1
                starts.append(where[at])
                break
    return min(starts, default=0)


def _cut(snippet: str) -> str:
    return snippet[:SNIPPET_CHARS] + ("…" if len(snippet) > SNIPPET_CHARS else "")
