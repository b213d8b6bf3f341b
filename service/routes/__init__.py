"""HTTP translation only: one router per resource (chat, models, knowledge base, health), shared deps in deps.py."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from ..protocol import ErrorResponse
from . import chat, files, fine_tuning, health, kb, models, responses, vector_stores

# Every error the API returns is OpenAI-shaped; the schema says so (the fuzz test checks responses against it).
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": what}
    for status, what in [
        (400, "malformed request"), (401, "missing or wrong API key"), (404, "unknown model, route or document"),
        (413, "body too large"), (429, "rate limit reached (see Retry-After)"), (500, "internal error"),
        (502, "the model server failed"), (503, "the model server or the knowledge base is unavailable"),
        (504, "the model server timed out"),
    ]
}  # fmt: skip

api_router = APIRouter(responses=ERRORS)
for _module in (health, models, chat, responses, kb, files, fine_tuning, vector_stores):
    api_router.include_router(_module.router)
