"""The background thread that writes the knowledge bases: ingest jobs (keyword phase: seconds) one at a time in the
order they came, and between them the embedding of what those jobs left unembedded, which gives way to any job or
writer that comes.

A daemon thread, not a ThreadPoolExecutor: the interpreter joins an executor's threads at exit, so stopping the
service would wait for a whole-novel embedding; ingest is crash-safe, and an interrupted embedding resumes at the
next start.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

log = logging.getLogger(__name__)


class Preempted(Exception):
    """An embedding pass stopped between two batches: a job or a writer waits (the pass runs again after it)."""


class WriteLock:
    """A collection's write lock (reentrant) that knows how many threads wait for it: an embedding pass holding it
    lets them in at its next batch."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._count = threading.Lock()
        self.waiting = 0

    def __enter__(self) -> WriteLock:
        with self._count:
            self.waiting += 1
        try:
            self._lock.acquire()
        finally:
            with self._count:
                self.waiting -= 1
        return self

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


class IngestQueue:
    """`submit(fn, *args)` runs `fn` on the queue's thread (started on first use) and returns its Future;
    `embed_later(key, fn)` runs `fn(give_way)` when no job waits, again after each `Preempted`, until it returns
    (`give_way()` raises Preempted once a job is queued, another condition given holds, or the queue closes)."""

    def __init__(self, name: str = "vector-store-ingest") -> None:
        self.name = name
        self._jobs: queue.SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]] | None] = (
            queue.SimpleQueue())
        self._backlog: dict[str, tuple[Callable[[Callable[[], None]], None], Callable[[], bool]]] = {}
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._busy = 0  # jobs queued or running, and embedding passes owed
        self._closed = False

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        with self._lock:
            self._busy += 1
            self._start()
        self._jobs.put((future, fn, args))
        return future

    def embed_later(
        self, key: str, fn: Callable[[Callable[[], None]], None], wait_for: Callable[[], bool] = lambda: False
    ) -> None:
        """Owe one embedding pass `fn` for `key` (a second call before it ran replaces the first)."""
        with self._lock:
            if key not in self._backlog:
                self._busy += 1
            self._backlog[key] = (fn, wait_for)
            self._start()
        self._jobs.put((Future(), _nothing, ()))  # wakes the thread if it sleeps on an empty queue

    def _start(self) -> None:  # (under self._lock)
        if self._thread is None and not self._closed:
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._lock:
                owed = bool(self._backlog)
            try:
                job = self._jobs.get(block=not owed)
            except queue.Empty:
                self._embed_one()
                continue
            if job is None:
                return
            future, fn, args = job
            if fn is _nothing:
                continue
            try:
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(fn(*args))
                    except BaseException as exc:  # the Future carries it; the job itself records what failed
                        log.debug("ingest job failed: %s", exc)
                        future.set_exception(exc)
            finally:
                self._done()

    def _embed_one(self) -> None:
        with self._lock:
            key = next(iter(self._backlog))
            fn, wait_for = self._backlog.pop(key)

        def give_way() -> None:
            if not self._jobs.empty() or self._closed or wait_for():
                raise Preempted(key)

        try:
            fn(give_way)
        except Preempted:
            with self._lock:
                if not self._closed and key not in self._backlog:  # (else owed again already: counted then)
                    self._backlog[key] = (fn, wait_for)
                    return
        except BaseException:  # the pass records what failed; the thread goes on
            log.exception("embedding %s failed (what is left is embedded at the next start)", key)
        self._done()

    def _done(self) -> None:
        with self._lock:
            self._busy -= 1
            self._idle.notify_all()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every job ran and every owed embedding pass finished; False when `timeout` came first."""
        with self._lock:
            return self._idle.wait_for(lambda: self._busy <= 0 or self._closed, timeout)

    def close(self) -> None:
        """Stop after the running job, or at an embedding pass's next batch (queued jobs are dropped and owed passes
        forgotten: they resume at the next start)."""
        with self._lock:
            self._closed = True
            self._backlog.clear()
            self._idle.notify_all()
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job[0].cancel()
        self._jobs.put(None)


def _nothing() -> None:
    """The wake-up job embed_later queues."""
