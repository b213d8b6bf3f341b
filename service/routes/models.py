"""GET /v1/models and /v1/models/{id}: the models this service answers as."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from ..protocol import ModelCard, ModelList
from .deps import Chat, Key

router = APIRouter(tags=["models"], dependencies=[Key])


@router.get("/v1/models")
async def list_models(chat: Chat) -> ModelList:
    return ModelList(data=chat.models())


@router.get("/v1/models/{model_id}", response_model=ModelCard)
async def get_model(model_id: str, chat: Chat) -> Any:
    chat.resolve_model(model_id)
    return next(m for m in chat.models() if m.id == model_id)
