"""Embedding chunks in batches and writing them to a store in flushes (also the staged chunks the keyword phase
left), with one progress bar for a whole run (on a terminal), or progress lines (a log, a pipe): done/total,
chunks/s and the time left, every few seconds."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from .chunking import content_hash, embedding_text, pieces
from .embedding import Embedder
from .pieces import mean_vectors

log = logging.getLogger(__name__)


class NodeSink(Protocol):
    def add_nodes(self, nodes: Sequence[Any]) -> None: ...

    def add_pieces(self, by_hash: dict[str, list[list[float]]]) -> None: ...


class ProgressLines:
    """`embedding: 512/2000 chunks (26%), 41.2 chunks/s, about 36 s left` to a stream that is not a terminal: the
    first batch, then at most one line every `every` seconds, and the last."""

    def __init__(self, total: int, stream: Any = None, every: float = 5.0) -> None:
        self.total, self.stream, self.every = total, stream or sys.stderr, every
        self.done = 0
        self.skipped = 0  # counted without embedding (skip): not in the rate that tells the time left
        self.started = time.monotonic()
        self.last: float | None = None

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.last is None or now - self.last >= self.every or self.done >= self.total:
            self.last = now
            self.stream.write(self.line(now - self.started) + "\n")
            self.stream.flush()

    def skip(self, n: int) -> None:
        """Count `n` chunks that needed no embedding (a vector the store had, a text seen already)."""
        self.skipped += n
        self.update(n)

    def line(self, elapsed: float) -> str:
        rate = (self.done - self.skipped) / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.done) / rate if rate > 0 else 0.0
        eta = f"about {left:.0f} s left" if self.done < self.total else f"done in {elapsed:.1f} s"
        return f"embedding: {self.done}/{self.total} chunks ({100 * self.done // max(self.total, 1)}%), " \
               f"{rate:.1f} chunks/s, {eta}"

    def close(self) -> None:
        pass


def progress_display(total: int, stream: Any = None) -> Any:
    """A tqdm bar on a terminal, progress lines anywhere else (a log file or a pipe shows nothing for minutes
    otherwise)."""
    stream = stream or sys.stderr
    if getattr(stream, "isatty", lambda: False)():
        from tqdm import tqdm

        return tqdm(total=total, unit="chunk", desc="embedding", dynamic_ncols=True, file=stream)
    return ProgressLines(total, stream)


class EmbeddingWriter:
    """Embeds nodes in batches and writes them in flushes, with one progress bar for the whole run."""

    def __init__(
        self, store: NodeSink, embedder: Embedder, batch: int, total: int, progress: bool, flush_every: int = 256,
        report: Callable[[int, int], None] | None = None, with_overlap: bool = True, piece_chars: int = 0,
    ):
        # a crash loses at most `flush_every` chunks of embedding work
        self.store, self.embedder, self.batch, self.flush_every = store, embedder, batch, flush_every
        self.buffer: list[Any] = []
        self.bar: Any = None
        if progress and total:
            self.bar = progress_display(total)
        self.chars = 0
        self.seconds = 0.0
        self.written = 0
        self.total, self.embedded, self.report = total, 0, report  # report(done, total) after each batch
        self.with_overlap = with_overlap  # False: a chunk's leading overlap is not embedded (its neighbour has it)
        self.piece_chars = piece_chars  # > 0: embed pieces of at most this many characters (pieces.py)
        self.pieces: dict[str, list[list[float]]] = {}  # content hash -> piece vectors, written before the chunks

    def run(self, nodes: Sequence[Any]) -> None:
        try:
            for lo in range(0, len(nodes), self.batch):
                part = nodes[lo : lo + self.batch]
                t0 = time.perf_counter()
                texts = [embedding_text(n.text, n.metadata, self.with_overlap) for n in part]
                vectors = self._embed(texts, part)
                self.seconds += time.perf_counter() - t0
                self.chars += sum(map(len, texts))
                for n, v in zip(part, vectors, strict=True):
                    n.embedding = v.tolist()
                self.buffer.extend(part)
                if len(self.buffer) >= self.flush_every:
                    self.flush()
                if self.bar:
                    self.bar.update(len(part))
                self.embedded += len(part)
                if self.report:
                    self.report(self.embedded, self.total)
        except BaseException:
            # keep what was embedded before a failure or Ctrl-C (the next run skips it), but when the store
            # itself failed, the first error is the one that says why
            try:
                self.flush()
            except Exception as exc:
                log.warning("could not keep the last embedded chunks: %s", exc)
            raise
        self.flush()

    def advance(self, n: int) -> None:
        """Count `n` chunks written without embedding (a vector the collection had, a text seen already)."""
        if n:
            if self.bar:
                getattr(self.bar, "skip", self.bar.update)(n)  # tqdm has no skip: it counts them as done
            self.embedded += n
            if self.report:
                self.report(self.embedded, self.total)

    def _embed(self, texts: list[str], nodes: Sequence[Any]) -> Any:
        """One unit-length vector per text: the embedder's, or (embedding pieces) the normalised mean of its
        pieces' vectors, whose own vectors are kept by the chunk text's content hash for the next flush."""
        if self.piece_chars <= 0:
            return self.embedder.embed_passages(texts)
        cut = [pieces(t, self.piece_chars) for t in texts]
        flat = self.embedder.embed_passages([p for ps in cut for p in ps])
        at = 0
        for n, ps in zip(nodes, cut, strict=True):
            h = n.metadata.setdefault("content_hash", content_hash(n.text))  # the search finds a text's chunks by it
            self.pieces[str(h)] = [[float(x) for x in v] for v in flat[at : at + len(ps)]]
            at += len(ps)
        return mean_vectors([len(ps) for ps in cut], flat)

    def flush(self) -> None:
        if self.pieces:  # first: a chunk written is a chunk whose pieces are searchable
            self.store.add_pieces(self.pieces)
            self.pieces = {}
        if self.buffer:
            self.store.add_nodes(self.buffer)
            self.written += len(self.buffer)
            log.info("stored %d embedded chunks", self.written)
            self.buffer = []

    def close(self) -> None:
        if self.bar:
            self.bar.close()


class _Unstaging:
    """Writes embedded nodes (and the nodes of the same text, which share the vector), then forgets them as staged.
    A crash between the two leaves a chunk both written and staged: the next run only unstages it. Under the store's
    write lock, each node as it is staged now: a new version committed since it was read (another process's
    `ingest add`) may have moved its offsets, or removed it (then it is not written, nor its pieces' vectors)."""

    def __init__(self, store: Any, same_text: dict[str, list[Any]]) -> None:
        self.store, self.same_text = store, same_text
        self.pending: dict[str, list[list[float]]] = {}  # content hash -> piece vectors, written with the chunks
        self.written = 0

    def add_nodes(self, nodes: Sequence[Any]) -> None:
        vectors = {}
        for n in nodes:
            for twin in [n, *self.same_text.get(n.node_id, [])]:
                vectors[twin.node_id] = n.embedding
        with self.store.writing():
            out = self.store.staged_nodes(list(vectors))
            for n in out:
                n.embedding = vectors[n.node_id]
            hashes = {_hash(n) for n in out}
            if kept := {h: v for h, v in self.pending.items() if h in hashes}:
                self.store.add_pieces(kept)  # first: a chunk written is a chunk whose pieces are searchable
            self.store.add_nodes(out)
            self.store.unstage([n.node_id for n in out])
        for n in nodes:
            self.pending.pop(_hash(n), None)
        self.written += len(out)

    def add_pieces(self, by_hash: dict[str, list[list[float]]]) -> None:
        self.pending.update(by_hash)  # a text's twins share its pieces: they are kept by its hash


def _hash(node: Any) -> str:
    return str(node.metadata.get("content_hash") or content_hash(node.text))


def embed_staged(
    store: Any,
    embedder: Callable[[], Embedder],
    ids: Sequence[str],
    batch: int,
    flush_every: int,
    progress: bool,
    report: Callable[[int, int], None] | None = None,
    with_overlap: bool = True,
    piece_chars: int = 0,
    page: int = 4096,
) -> tuple[int, int, float]:
    """Embed the staged chunks of `ids` (a `KnowledgeStore`'s), in that order, and write them, reading `page` of
    them at a time (memory: one page's nodes and vectors, not the collection's); a text that occurs more than once,
    or that the collection holds embedded already, is embedded once; without `with_overlap`, a chunk's leading
    overlap is left out of what is embedded. Returns (chunks written, characters embedded, seconds embedding)."""
    writer: EmbeddingWriter | None = None
    written = 0
    try:
        for lo in range(0, len(ids), page):
            part = ids[lo : lo + page]
            done = store.existing_ids(part)  # written by a run that died before unstaging them
            if done:
                store.unstage(done)
            nodes = store.staged_nodes([i for i in part if i not in done])
            if not nodes:
                continue
            if writer is None:  # the embedder is loaded only when there is something to embed
                writer = EmbeddingWriter(_Unstaging(store, {}), embedder(), batch, len(ids), progress, flush_every,
                                         report=report, with_overlap=with_overlap, piece_chars=piece_chars)  # fmt: skip
                writer.advance(lo)  # the pages before had nothing staged left
            written += _embed_page(store, writer, nodes, skipped=len(part) - len(nodes))
    finally:
        if writer is not None:
            writer.close()
    return (written, writer.chars, writer.seconds) if writer else (0, 0, 0.0)


def _embed_page(store: Any, writer: EmbeddingWriter, nodes: list[Any], skipped: int) -> int:
    """Write one page of staged nodes with their vectors: a text seen twice in the page is embedded once, one the
    collection has (another document, an earlier version or page) takes that vector; before each flush's worth is
    embedded, the nodes no longer staged (a version committed meanwhile dropped them) are left out. Progress counts
    them all, and the page's `skipped` chunks (written already). Returns how many nodes were written."""
    first: dict[str, Any] = {}
    same_text: dict[str, list[Any]] = {}
    for n in nodes:
        if n.text in first:
            same_text.setdefault(first[n.text].node_id, []).append(n)
        else:
            first[n.text] = n
    writer.store = sink = _Unstaging(store, same_text)
    known = store.vectors_by_text(hashes=[str(n.metadata["content_hash"]) for n in first.values()
                                          if n.metadata.get("content_hash")])
    for n in (reused := [n for n in first.values() if n.text in known]):
        n.embedding = known[n.text]
    if reused:
        sink.add_nodes(reused)
    writer.advance(skipped + len(nodes) - len(first) + len(reused))
    todo = [n for n in first.values() if n.text not in known]
    for lo in range(0, len(todo), writer.flush_every):
        part = todo[lo : lo + writer.flush_every]
        group = {n.node_id: {n.node_id, *(t.node_id for t in same_text.get(n.node_id, []))} for n in part}
        staged = store.existing_ids(sorted(set().union(*group.values())), staged=True)
        live = [n for n in part if group[n.node_id] & staged]
        writer.advance(len(part) - len(live))
        writer.run(live)
    return sink.written
