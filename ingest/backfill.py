"""The embedding phase of an ingest: names and vectors for what the keyword phase committed (resumable)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable

from .embedding import Embedder, get_embedder
from .entities import MINER_VERSION, mine_entities
from .kb import embedder_name, unembedded_ids
from .kin import mine_kin
from .records import StoredChunk
from .settings import IngestSettings
from .store import COMPLETE, KnowledgeStore
from .writer import embed_staged

log = logging.getLogger(__name__)


class EmbedderOnce:
    """The embedder, loaded on first use, checked against the collection and recorded in it before any write."""

    def __init__(self, store: KnowledgeStore, settings: IngestSettings, given: Embedder | None) -> None:
        self.store, self.settings, self.loaded = store, settings, given
        store.check_embedder(given.name if given else embedder_name(settings))

    def get(self) -> Embedder:
        if self.loaded is None:
            self.loaded = get_embedder(self.settings.embed_model)
        self.store.check_embedder(self.loaded.name, self.loaded.dim)
        # recorded before any write, so that a crash cannot mix models or piece lengths
        self.store.set_embedding_info(
            self.loaded.name, self.loaded.dim, self.store.piece_chars(self.settings.embed_piece_chars)
        )
        return self.loaded


def embed_phase(
    store: KnowledgeStore,
    settings: IngestSettings,
    embedder: Callable[[], Embedder],
    progress: bool,
    texts: dict[str, str],
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[int, int, float]:
    """Names first (the router reads them; seconds), then the vector of every visible chunk that has none, until
    none is left: chunks another process staged meanwhile (`ingest add` beside the service) are embedded too, each
    chunk tried once. `texts` holds the documents' texts where the caller has them loaded. Returns (chunks,
    characters, seconds) embedded."""
    if settings.mine_entities:
        mine_pending_entities(store, texts, progress)
    tried: set[str] = set()
    total = (0, 0, 0.0)
    while ids := [i for i in unembedded_ids(store) if i not in tried]:
        log.info("embedding %d chunks", len(ids))
        tried.update(ids)
        counts = embed_staged(
            store, embedder, ids, settings.embed_batch_size, settings.embed_flush, progress, on_progress,
            with_overlap=settings.embed_overlap, piece_chars=store.piece_chars(settings.embed_piece_chars),
            page=embed_page(settings),
        )
        total = (total[0] + counts[0], total[1] + counts[1], total[2] + counts[2])
    return total


def embed_page(settings: IngestSettings) -> int:
    """Staged chunks read and embedded at a time: about a keyword-phase group's characters' worth."""
    return max(settings.embed_flush, settings.ingest_group_chars // max(settings.chunk_size, 1))


def mine_pending_entities(store: KnowledgeStore, texts: dict[str, str], progress: bool = False) -> int:
    """Mine the names of committed documents whose names the keyword phase left for later, or an older miner mined
    (MINER_VERSION; jieba's tagger: about 30 s for a novel), from the loaded text or, after a restart, from the
    stored chunks; with `progress`, say so on stderr. Returns how many."""
    done = 0
    for rec in store.records().values():
        if (rec.entities_mined and rec.entities_version >= MINER_VERSION) or rec.status != COMPLETE:
            continue
        if progress:
            print(f"finding the names in {rec.title or rec.doc_id} ({rec.chars:,} characters; about 30 s for a novel)",
                  file=sys.stderr, flush=True)  # fmt: skip
        text = texts.get(rec.doc_id)
        if text is None:
            text = stored_text(store.get_chunks(rec.committed))
        entities = mine_entities(text, aliases=rec.aliases)
        kin = mine_kin(text, entities, rec.aliases)
        with store.writing():  # read and written back with no version committed in between (another process's)
            now = store.records([rec.doc_id]).get(rec.doc_id)
            if now is not None and now.doc_hash == rec.doc_hash and now.status == COMPLETE:  # not replaced meanwhile
                now.entities, now.entities_mined, now.entities_version = entities, True, MINER_VERSION
                now.kin = kin
                store.put_record(now)
                done += 1
    return done


def stored_text(chunks: Iterable[StoredChunk]) -> str:
    """A document's text again from its stored chunks: in order, each without the `overlap` characters that repeat
    the chunk before (counted twice, a name would reach the miner's minimum count sooner)."""
    ordered = sorted(chunks, key=lambda c: int(c.metadata.get("start_char", 0)))
    return "\n".join(c.text[int(c.metadata.get("overlap", 0)) :] for c in ordered)
