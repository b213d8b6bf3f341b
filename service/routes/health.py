"""GET /health (open: what a load balancer polls) and GET /metrics (Prometheus)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse, Response

from .deps import Chat, MetricsDep

router = APIRouter(tags=["health"])


@router.get("/health")
async def health(chat: Chat) -> dict[str, Any]:
    return {"status": "ok", "models": [m.id for m in chat.models()]}


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(m: MetricsDep) -> Response:
    body, content_type = m.render()
    return Response(body, media_type=content_type)
