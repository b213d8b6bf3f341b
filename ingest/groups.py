"""The keyword phase of an ingest in bounded groups: each document chunked and committed on its own, the keyword
index brought up to date after every group of about `ingest_group_chars` characters, so a batch's memory is one
group's (its loaded texts are let go as it is written), not the whole batch's chunks."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from .aliases import mine_aliases
from .chunking import ChunkNode, chunk_nodes, content_hash, to_text_node
from .embedding import Embedder
from .errors import IngestError
from .kb import commit_version, is_current, refresh_keyword_index
from .loaders import LoadedDocument
from .settings import IngestSettings
from .store import DocRecord, KnowledgeStore

if TYPE_CHECKING:
    from .pipeline import IngestSummary

log = logging.getLogger(__name__)

Work = deque[tuple[LoadedDocument, str]]  # documents to write, with their version hash


def doc_hash(doc: LoadedDocument, settings: IngestSettings) -> str:
    # The chunking settings are part of the version: changing them re-chunks (and re-embeds) the document.
    sig = f"{settings.chunk_size}/{settings.chunk_overlap}/{settings.chunk_unit}/{doc.title}\n"
    return content_hash(sig + doc.text)


def length_fn(settings: IngestSettings, embedder: Callable[[], Embedder]) -> Callable[[str], int]:
    if settings.chunk_unit == "chars":
        return len
    counter = getattr(embedder(), "token_count", None)
    if counter is None:
        raise IngestError("chunk_unit=tokens needs an embedder that can count tokens")
    return counter


def plan(
    docs: list[LoadedDocument], settings: IngestSettings, records: dict[str, DocRecord], summary: IngestSummary
) -> Work:
    """The documents whose version is not committed yet, with their version hash (chunked later, one by one)."""
    work: Work = deque()
    for doc in docs:
        summary.documents += 1
        h = doc_hash(doc, settings)
        rec = records.get(doc.doc_id)
        if rec is not None and is_current(rec, h):
            summary.unchanged += 1
            summary.chunks_skipped += rec.n_chunks
            continue
        work.append((doc, h))
    return work


def write_groups(
    store: KnowledgeStore,
    work: Work,
    records: dict[str, DocRecord],
    settings: IngestSettings,
    summary: IngestSummary,
    reuse: dict[str, list[float]],
    length: Callable[[str], int],
) -> dict[str, str]:
    """Commit the documents of `work`, taking them off it group by group (the caller holds no other reference,
    so each group's texts are freed once written), and refresh the keyword index after each group: the first
    documents of a large batch answer keyword searches while the rest are still being read. Returns the last
    group's texts by document id (the embedding phase mines names from them without reading the chunks back)."""
    texts: dict[str, str] = {}
    total, done = len(work), 0
    while work:
        group: list[tuple[LoadedDocument, str]] = []
        chars = 0
        while work and (not group or chars + len(work[0][0].text) <= settings.ingest_group_chars):
            group.append(work.popleft())
            chars += len(group[-1][0].text)
        texts = {d.doc_id: d.text for d, _ in group}
        for doc, h in group:
            _write_version(store, doc, h, _nodes(doc, settings, length), records, settings, summary, reuse)
        # a fresh index each time: a writer reads only the other segments' rows, not the term counts it made
        refresh_keyword_index(settings, store)
        done += len(group)
        log.info("searchable by keyword: %d of %d documents (%d characters in this group)", done, total, chars)
    return texts


def _nodes(doc: LoadedDocument, settings: IngestSettings, length: Callable[[str], int]) -> list[ChunkNode]:
    """The chunks of a document as nodes (ids are content-addressed; LlamaIndex TextNodes are made of them when
    they are embedded)."""
    meta = {"doc_id": doc.doc_id, "source": doc.source, "doc_title": doc.title}
    return chunk_nodes(doc.doc_id, doc.text, meta, settings.chunk_size, settings.chunk_overlap, length)


def _write_version(
    store: KnowledgeStore,
    doc: LoadedDocument,
    h: str,
    nodes: list[ChunkNode],
    records: dict[str, DocRecord],
    settings: IngestSettings,
    summary: IngestSummary,
    reuse: dict[str, list[float]],
) -> None:
    """Commit the new version of a document: chunks the store lacks are staged (text only, embedded later), or
    written with their vector when `reuse` has one for their text."""

    def write(fresh: list[ChunkNode]) -> None:
        known = [to_text_node(n.node_id, n.text, n.metadata) for n in fresh if n.text in reuse]
        for tn in known:
            tn.embedding = reuse[tn.text]
        if known:
            store.add_nodes(known)
            summary.chunks_embedded += len(known)  # with the vector of the same text (a renamed file)
        if len(known) < len(fresh):
            store.stage_nodes([n for n in fresh if n.text not in reuse])

    old = records.get(doc.doc_id)
    counts = commit_version(store, _new_record(doc, h, old, settings), nodes, write)
    summary.chunks_added += counts.added
    summary.chunks_skipped += counts.kept
    summary.chunks_removed += counts.removed
    if old is None or not old.committed:
        summary.added_docs += 1
    else:
        summary.updated_docs += 1


def _new_record(doc: LoadedDocument, doc_hash: str, old: DocRecord | None, settings: IngestSettings) -> DocRecord:
    """The record of a new version of `doc`: still serving the old version's chunks until committed."""
    aliases = mine_aliases(doc.text) if settings.mine_aliases else []
    return DocRecord(
        doc_id=doc.doc_id,
        source=doc.source,
        title=doc.title,
        doc_hash=doc_hash,
        fmt=doc.fmt,
        encoding=doc.encoding,
        chars=len(doc.text),
        text_hash=content_hash(doc.text),
        committed=old.committed if old else [],
        aliases=aliases,
        # names are mined in the embedding phase (jieba's tagger is slow); the old version's serve till then
        entities=old.entities if old else [],
        kin=old.kin if old else [],
        entities_mined=not settings.mine_entities,
    )
