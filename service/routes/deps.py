"""The routes' shared `Annotated` dependencies: the app's services, API keys and rate limits, a checked request."""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import Depends, Request
from pydantic import ValidationError

from ..answer.chat import ChatService
from ..errors import RateLimited, Unauthorized, validation_error
from ..keys import KeyRing
from ..metrics import Metrics
from ..protocol import ChatCompletionRequest
from ..ratelimit import RateLimiter
from ..settings import ServiceSettings
from ..vector_stores import VectorStoreService


# The dependencies are `async def` although they do no I/O: FastAPI runs a plain `def` dependency on a worker
# thread, and those four hops were ~0.4 ms of the ~2 ms CPU a proxied chat request cost (bench/service_bench.py).
async def get_chat(request: Request) -> ChatService:
    return request.app.state.chat


async def get_settings(request: Request) -> ServiceSettings:
    return request.app.state.settings


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


async def get_vector_stores(request: Request) -> VectorStoreService:
    return request.app.state.vector_stores


Chat = Annotated[ChatService, Depends(get_chat)]
VectorStores = Annotated[VectorStoreService, Depends(get_vector_stores)]
Settings = Annotated[ServiceSettings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]


def _bearer(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


WRONG_KEY = "Incorrect API key provided: send `Authorization: Bearer <key>`"


async def require_key(request: Request, settings: Settings) -> None:
    """Chat needs a key when keys are configured (`chat_auth` auto), always (required) or never (open)."""
    ring: KeyRing = request.app.state.keys
    key_id = ring.identify(_bearer(request))
    if ring.chat_needs_key(settings.chat_auth) and key_id is None:
        raise Unauthorized(WRONG_KEY)
    _admit(request, settings, key_id)


async def require_kb_key(request: Request, settings: Settings) -> None:
    """Knowledge-base reads and writes always need a key, even when chat is open; with none configured they are
    off. The key ring is read on every request: keys added or revoked while the service runs count at once."""
    ring: KeyRing = request.app.state.keys
    if not ring.configured():
        raise Unauthorized("the knowledge-base, files and fine-tuning endpoints are disabled: create a key with "
                           "`kongming keys add` (or set KONGMING_API_KEYS) and send it as a Bearer token")
    key_id = ring.identify(_bearer(request))
    if key_id is None:
        raise Unauthorized(WRONG_KEY)
    _admit(request, settings, key_id)


def _admit(request: Request, settings: ServiceSettings, key_id: str | None) -> None:
    """Per-caller token bucket: the key's id, or the client's address for requests without a key."""
    request.state.key_id = key_id  # the access log names the key by id, never by value
    limiter: RateLimiter = request.app.state.limiter
    caller = key_id or "addr:" + (request.client.host if request.client else "-")
    wait = limiter.take(caller)
    if wait > 0:
        seconds = max(1, math.ceil(wait))
        raise RateLimited(
            f"Rate limit reached: {settings.rate_limit_per_minute:g} requests per minute"
            f" (bursts of {settings.rate_limit_burst}); retry in {seconds} s",
            headers={"retry-after": str(seconds)},
        )


async def checked_chat_request(body: ChatCompletionRequest, settings: Settings) -> ChatCompletionRequest:
    """The request body, validated by its model, then against the limits that are settings."""
    try:
        body.check_limits(settings.max_messages, settings.max_tokens_cap)
    except ValidationError as exc:
        raise validation_error(exc.errors()) from exc
    return body


Key = Depends(require_key)
KbKey = Depends(require_kb_key)
ChatRequest = Annotated[ChatCompletionRequest, Depends(checked_chat_request)]
