"""Embedding chunks in batches and writing them to a store in flushes, with one progress bar for a whole run."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any, Protocol

from .embedding import Embedder

log = logging.getLogger(__name__)


class NodeSink(Protocol):
    def add_nodes(self, nodes: Sequence[Any]) -> None: ...


class EmbeddingWriter:
    """Embeds nodes in batches and writes them in flushes, with one progress bar for the whole run."""

    def __init__(
        self, store: NodeSink, embedder: Embedder, batch: int, total: int, progress: bool, flush_every: int = 256
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
