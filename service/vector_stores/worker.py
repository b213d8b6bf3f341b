"""The background thread that ingests vector store files, one at a time, in the order they were attached.

A daemon thread, not a ThreadPoolExecutor: the interpreter joins an executor's threads at exit, so stopping the
service would wait for a whole-novel ingest; ingest is crash-safe, and an interrupted file resumes at the next start.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

log = logging.getLogger(__name__)


class IngestQueue:
    """`submit(fn, *args)` runs `fn` on the queue's thread (started on first use) and returns its Future."""

    def __init__(self, name: str = "vector-store-ingest") -> None:
        self.name = name
        self._jobs: queue.SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]] | None] = (
            queue.SimpleQueue())
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        self._jobs.put((future, fn, args))
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
        return future

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, fn, args = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # the Future carries it; the job itself records what failed
                log.debug("ingest job failed: %s", exc)
                future.set_exception(exc)

    def close(self) -> None:
        """Stop after the running job (queued ones are dropped: they resume at the next start)."""
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job[0].cancel()
        self._jobs.put(None)
