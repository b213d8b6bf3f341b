"""ASGI middleware of the app: the body-size limit (413) and the access log (request id, one JSON line, metrics)."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import PayloadTooLarge, error_response
from .metrics import Metrics

log = logging.getLogger("kongming.access")


class BodyLimit:
    """Refuses request bodies over the limit (413) before they are read into memory; knowledge-base uploads
    have their own (larger) limit."""

    def __init__(
        self, app: ASGIApp, limit: int, upload_limit: int | None = None, upload_prefix: str = "/v1/kb/",
        metrics: Metrics | None = None, prefix_limits: dict[str, int] | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.limit = limit
        self.upload_limit = upload_limit or limit
        self.upload_prefix = upload_prefix
        # path prefix -> its own limit (/v1/files: fine-tuning data), beside the knowledge-base uploads'
        self.prefix_limits = {upload_prefix: self.upload_limit, **(prefix_limits or {})}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        limit = next((n for prefix, n in self.prefix_limits.items() if path.startswith(prefix)), self.limit)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        too_big = PayloadTooLarge(f"request body too large: the limit is {limit} bytes")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await error_response(too_big, count=self._count)(scope, receive, send)
            return
        seen = 0
        tripped = False

        async def limited() -> Message:
            nonlocal seen, tripped
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    tripped = True
                    raise _TooLarge()
            return message

        async def guarded(message: Message) -> None:
            if not tripped:  # whatever the app answers to a body it could not finish reading is replaced by the 413
                await send(message)

        try:
            await self.app(scope, limited, guarded)
        except _TooLarge:
            pass
        if tripped:
            await error_response(too_big, count=self._count)(scope, receive, send)

    def _count(self, kind: str) -> None:
        if self.metrics is not None:
            self.metrics.errors.labels(type=kind).inc()


class _TooLarge(Exception):
    pass


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_RID_CHARS = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:")


def _request_id(given: bytes | None) -> bytes:
    """The client's `x-request-id` when it is a plain token (it goes into logs and headers), else a new one."""
    if given and len(given) <= 64 and all(c in _RID_CHARS for c in given):
        return given
    return uuid.uuid4().hex[:16].encode()


class AccessLog:
    """Request id (kept from `x-request-id` or made), one structured log line, a counter and a latency
    observation per request. Plain ASGI, so streamed responses pass through untouched; the line is written when
    the last byte has gone, with the token counts the route recorded in `request.state`."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        rid = _request_id(headers.get(b"x-request-id"))
        scope.setdefault("state", {})["request_id"] = rid.decode()
        started = time.perf_counter()
        status = 500
        route = b"-"

        async def send_with_id(message: Message) -> None:
            nonlocal status, route
            if message["type"] == "http.response.start":
                status = message["status"]
                out = list(message.get("headers") or [])
                route = next((v for k, v in out if k == b"x-kongming-route"), b"-")
                out.append((b"x-request-id", rid))
                message = {**message, "headers": out}
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self.metrics.in_flight.dec()
            seconds = time.perf_counter() - started
            path = getattr(scope.get("route"), "path", "unmatched")  # the route template: bounded label values
            method = scope["method"] if scope["method"] in _METHODS else "other"  # bounded label values
            self.metrics.requests.labels(method=method, path=path, status=str(status)).inc()
            self.metrics.request_latency.labels(method=method, path=path).observe(seconds)
            state = scope.get("state") or {}
            fields: dict[str, Any] = {
                "request_id": rid.decode(), "method": method, "path": scope["path"], "route_path": path,
                "status": status, "route": route.decode("latin-1"), "ms": round(seconds * 1000, 1),
                "key_id": state.get("key_id"),
            }  # fmt: skip
            if "tokens" in state:
                fields["prompt_tokens"], fields["completion_tokens"] = state["tokens"]
            log.info("%s %s %d", method, scope["path"], status, extra={"fields": fields})
