"""Ingest operations: add (idempotent, incremental, resumable; keyword-searchable before it is embedded), embed what
is still unembedded, remove, rebuild, list."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .backfill import EmbedderOnce, embed_phase
from .chunking import content_hash
from .embedding import Embedder, get_embedder
from .errors import UnknownDocumentError, UnreadableFileError
from .groups import length_fn, plan, write_groups
from .kb import (
    by_text,
    count_embedded,
    open_store,
    recover,
    refresh_keyword_index,
    remove_record,
    unembedded_ids,
)
from .loaders import LoadedDocument, LoadProblem, iter_files, load_file
from .settings import IngestSettings
from .store import COMPLETE, DocRecord, check_writable
from .writer import EmbeddingWriter

log = logging.getLogger(__name__)
__all__ = ["IngestSummary", "add_paths", "embed_pending", "list_documents", "open_store", "rebuild"]
__all__ += ["remove_documents"]


@dataclass
class IngestSummary:
    documents: int = 0
    unchanged: int = 0
    added_docs: int = 0
    updated_docs: int = 0
    removed_docs: int = 0
    chunks_added: int = 0  # chunks of new versions written (staged for embedding, or given a known vector)
    chunks_skipped: int = 0
    chunks_removed: int = 0
    chunks_embedded: int = 0  # chunks given their vector by this run (this run's or those an earlier one left)
    chunks_unembedded: int = 0  # visible chunks still without a vector when the run ended (keyword only)
    embedded_chars: int = 0
    embed_seconds: float = 0.0
    searchable_seconds: float = 0.0  # until the keyword index held every document of the run
    seconds: float = 0.0
    failed: list[LoadProblem] = field(default_factory=list)
    warnings: list[LoadProblem] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"{self.documents} documents ({self.added_docs} new, {self.updated_docs} changed, "
            f"{self.unchanged} unchanged, {self.removed_docs} removed); chunks: {self.chunks_added} added, "
            f"{self.chunks_skipped} skipped, {self.chunks_removed} removed; {len(self.failed)} failed; "
            f"searchable by keyword after {self.searchable_seconds:.1f} s, {self.chunks_embedded} embedded"
            f"{f', {self.chunks_unembedded} not yet (`ingest embed`)' if self.chunks_unembedded else ''}; "
            f"{self.seconds:.1f} s"
        )


def add_paths(
    paths: Iterable[Path | str],
    settings: IngestSettings,
    collection: str | None = None,
    progress: bool = False,
    prune: bool = False,
    embedder: Embedder | None = None,
    confine: Path | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    embed: bool = True,
    on_searchable: Callable[[IngestSummary], None] | None = None,
) -> IngestSummary:
    """Ingest files and folders into a collection, in two phases (`on_progress(embedded, total)` after each
    embedding batch).

    Keyword phase (seconds): load, clean, chunk, keep the chunks' text staged in the store, commit each document
    version and bring the keyword index up to date after each group of about `ingest_group_chars` characters
    (`groups.py`: a large batch's memory is one group's): the documents answer keyword (and hybrid) searches
    from there on; `on_searchable(summary)` is called when all are. Embedding phase (minutes; skipped with
    `embed=False`): every staged chunk of the collection gets its vector (also those an interrupted run left),
    page by page, and hybrid retrieval uses each chunk's vector once it is written. A crash or Ctrl-C in either
    phase leaves the store consistent; the next `add_paths` or `embed_pending` finishes the work.

    Unchanged documents cost no embedding; changed ones keep the embeddings of chunks whose text did not
    change; an interrupted earlier run is finished. With `prune`, documents that were ingested from under
    the given folders but no longer exist there are removed. A document with the same text as another is
    reported, and replaces the other when the other's file no longer exists (a renamed or moved file). With
    `confine` (an upload folder), paths that resolve outside it are refused and reported like unreadable files.
    """
    t0 = time.perf_counter()
    summary = IngestSummary()
    check_writable(settings)
    store = open_store(settings, collection)
    embedders = EmbedderOnce(store, settings, embedder)
    roots = [Path(p) for p in paths]
    docs, sources_seen = _load(roots, settings, confine, summary)
    records = store.records()
    summary.chunks_removed += recover(store, records)
    work = plan(docs, settings, records, summary)
    gone = _gone(roots, docs, records, sources_seen, prune)
    renamed = _same_text(docs, records, sources_seen, {r.doc_id for r in gone}, summary)
    del docs  # from here `work` alone holds the loaded texts, and lets each group's go once it is written
    # a renamed file's text is embedded already: its vectors serve the new document's chunks
    reuse = store.vectors_by_text([i for r in renamed for i in r.committed]) if renamed else {}
    for rec in gone + renamed:
        summary.chunks_removed += remove_record(store, rec, keep_pieces=rec in renamed)
        summary.removed_docs += 1
    if work:  # each group's refresh brings the keyword index to what is visible, removals included
        texts = write_groups(store, work, records, settings, summary, reuse, length_fn(settings, embedders.get))
    else:  # (a second refresh would find the index current, and load it whole as a reader does: seconds at 10x)
        texts = {}
        refresh_keyword_index(settings, store)
    if reuse:  # the renamed texts' pieces now serve the new chunks; those of a text no chunk took go
        store.drop_pieces(content_hash(t) for t in reuse)
    summary.searchable_seconds = time.perf_counter() - t0
    if on_searchable is not None:
        on_searchable(summary)
    if embed:
        counts = embed_phase(store, settings, embedders.get, progress, texts, on_progress)
        summary.chunks_embedded += counts[0]
        summary.embedded_chars, summary.embed_seconds = counts[1], counts[2]
    summary.chunks_unembedded = len(unembedded_ids(store))
    summary.seconds = time.perf_counter() - t0
    return summary


def embed_pending(
    settings: IngestSettings,
    collection: str | None = None,
    progress: bool = False,
    embedder: Embedder | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> IngestSummary:
    """The embedding phase alone: give every visible chunk still without a vector its vector (what `add_paths`
    with `embed=False`, or an interrupted one, left), and mine the names of documents not mined yet, or mined by an
    older miner (entities.MINER_VERSION)."""
    t0 = time.perf_counter()
    summary = IngestSummary()
    check_writable(settings)
    store = open_store(settings, collection)
    embedders = EmbedderOnce(store, settings, embedder)
    summary.chunks_removed += recover(store, store.records())
    counts = embed_phase(store, settings, embedders.get, progress, {}, on_progress)
    summary.chunks_embedded, summary.embedded_chars, summary.embed_seconds = counts
    summary.chunks_unembedded = len(unembedded_ids(store))
    summary.seconds = time.perf_counter() - t0
    return summary


def _load(
    roots: list[Path], settings: IngestSettings, confine: Path | None, summary: IngestSummary
) -> tuple[list[LoadedDocument], set[str]]:
    """The documents of the files under `roots`, and the files read; what cannot be read goes to the summary."""
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
    return docs, sources_seen


def _gone(
    roots: list[Path], docs: list[LoadedDocument], records: dict[str, DocRecord], sources_seen: set[str], prune: bool
) -> list[DocRecord]:
    """Documents that a re-read file no longer contains (lines removed from a .jsonl), and with `prune` the
    documents of files gone from under the given folders."""
    produced = {d.doc_id for d in docs}
    gone = [r for r in records.values() if r.source in sources_seen and r.doc_id not in produced]
    if prune:
        folders = [str(p.resolve()).rstrip("/") + "/" for p in roots if p.is_dir()]
        gone += [
            r for r in records.values() if r.source not in sources_seen and any(r.source.startswith(f) for f in folders)
        ]
    return gone


def _same_text(
    docs: list[LoadedDocument],
    records: dict[str, DocRecord],
    sources_seen: set[str],
    removed: set[str],
    summary: IngestSummary,
) -> list[DocRecord]:
    """Documents with the text of another: reported; a stored one whose file no longer exists is returned, to
    be replaced by the new one (a renamed or moved file must not leave its old self behind)."""
    replaced: dict[str, DocRecord] = {}
    first_of: dict[str, LoadedDocument] = {}
    produced = {d.doc_id for d in docs}
    stored = by_text(records)
    for doc in docs:
        h = content_hash(doc.text)
        if h in first_of and first_of[h].doc_id != doc.doc_id:
            summary.warnings.append(_same_text_note(doc, first_of[h].source, first_of[h].doc_id, "both kept"))
        first_of.setdefault(h, doc)
        for old in stored.get(h, []):
            if old.doc_id == doc.doc_id or old.doc_id in removed or old.doc_id in replaced:
                continue
            if old.source not in sources_seen and not Path(old.source).exists():
                replaced[old.doc_id] = old
                summary.warnings.append(_same_text_note(doc, old.source, old.doc_id, "no longer exists: replaced"))
            elif old.doc_id not in produced:  # (a document of this batch was reported above)
                summary.warnings.append(_same_text_note(doc, old.source, old.doc_id, "both kept"))
    return list(replaced.values())


def _same_text_note(doc: LoadedDocument, other_source: str, other_id: str, outcome: str) -> LoadProblem:
    where = f"{doc.source} ({doc.doc_id})" if ":" in doc.doc_id else doc.source  # a .jsonl record: name it
    return LoadProblem(where, f"same text as {other_source} (document {other_id}), which {outcome}")


def remove_documents(targets: Iterable[str], settings: IngestSettings, collection: str | None = None) -> IngestSummary:
    """Remove documents named by id, by file path, or by a folder that contains their files."""
    t0 = time.perf_counter()
    summary = IngestSummary()
    check_writable(settings)
    store = open_store(settings, collection)
    records = store.records()
    for target in targets:
        path, folder = str(Path(target).resolve()), _folder(target)
        matched = [
            r
            for r in records.values()
            if r.doc_id == target
            or r.source == path
            or r.source.startswith(folder)
            or r.doc_id.startswith(target + ":")
        ]
        if not matched:
            raise UnknownDocumentError(
                f"no document {target!r} in collection {store.name!r}: see `ingest list --collection {store.name}`"
            )
        for rec in matched:
            if rec.doc_id in records:
                summary.chunks_removed += remove_record(store, rec)
                summary.removed_docs += 1
                del records[rec.doc_id]
    refresh_keyword_index(settings, store)
    summary.seconds = time.perf_counter() - t0
    return summary


def _folder(target: str) -> str:
    """`target` as a folder prefix of document sources ("/" for the root)."""
    return str(Path(target).resolve()).rstrip("/") + "/"


def documents_under(targets: Iterable[str], settings: IngestSettings, collection: str | None = None) -> dict[str, int]:
    """For each target, how many documents `remove_documents` would take for it as a folder holding their files."""
    sources = [r.source for r in open_store(settings, collection).records().values()]
    return {t: sum(s.startswith(_folder(t)) for s in sources) for t in targets}


def list_documents(settings: IngestSettings, collection: str | None = None) -> list[DocRecord]:
    """Document records by source, each with `embedded` (of `n_chunks`) filled in."""
    store = open_store(settings, collection)
    return sorted(count_embedded(store, store.records()).values(), key=lambda r: r.source + r.doc_id)


REBUILD_GROUP = 2048  # chunks read, embedded and written at a time by `rebuild`


def rebuild(
    settings: IngestSettings, collection: str | None = None, progress: bool = False, embedder: Embedder | None = None
) -> IngestSummary:
    """Re-embed every visible chunk with the configured embedder (e.g. after switching models).

    Works from the stored chunk texts (the source files need not exist any more). The new vectors go
    into a fresh collection that replaces the old one only when complete.
    """
    from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode

    t0 = time.perf_counter()
    summary = IngestSummary()
    check_writable(settings)
    store = open_store(settings, collection)
    embedder = embedder or get_embedder(settings.embed_model)
    records = store.records()
    summary.chunks_removed += recover(store, records)
    ids = [i for r in records.values() if r.status == COMPLETE for i in r.committed]
    target = store.rebuild_target()
    emb = EmbeddingWriter(target, embedder, settings.embed_batch_size, len(ids), progress,
                          with_overlap=settings.embed_overlap, piece_chars=settings.embed_piece_chars)
    try:
        # a group of chunk texts in memory at a time, not the whole knowledge base (50x the novel: 90,000 chunks)
        for lo in range(0, len(ids), REBUILD_GROUP):
            nodes = []
            for c in store.get_chunks(ids[lo : lo + REBUILD_GROUP]):
                node = TextNode(id_=c.chunk_id, text=c.text, metadata=c.metadata)
                node.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=str(c.metadata.get("doc_id", "")))
                nodes.append(node)
            emb.run(nodes)
            summary.chunks_added += len(nodes)
    finally:
        emb.close()
    target.set_embedding_info(embedder.name, embedder.dim, settings.embed_piece_chars)
    store.swap_in(target)
    store.unstage(ids)  # every chunk has its vector now
    summary.documents = len(records)
    summary.embedded_chars, summary.embed_seconds = emb.chars, emb.seconds
    summary.seconds = time.perf_counter() - t0
    return summary
