"""/v1/models: the models this service answers as (list, get, OpenAI's delete) and binding a fine-tuned model to a
persona (POST /v1/models/{id}/persona, an extension)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from ..errors import NotFound
from ..protocol import ErrorResponse, ModelList
from ..registry import fine_tuned_object
from .deps import Chat, KbKey, Key

router = APIRouter(tags=["models"])


class PersonaBinding(BaseModel):
    """Body of POST /v1/models/{id}/persona: the persona the model answers as, or null to unbind it."""

    model_config = ConfigDict(extra="forbid")
    persona: str | None = Field(description="a configured persona's name (e.g. zhuge-liang), or null")


@router.get("/v1/models", dependencies=[Key])
async def list_models(chat: Chat) -> ModelList:
    return ModelList(data=chat.models())


# {model_id:path}: a fine-tuned model's id may hold a slash (a base named by its hub id)
@router.post("/v1/models/{model_id:path}/persona", dependencies=[KbKey])
async def bind_persona(model_id: str, body: PersonaBinding, chat: Chat) -> dict[str, Any]:
    """Bind the fine-tuned chat model to a persona (the persona route then answers with it) or unbind it (null).
    A persona has at most one bound model: binding another replaces it."""
    return await chat.served.bind(model_id, body.persona)


@router.get("/v1/models/{model_id:path}", dependencies=[Key])
async def get_model(model_id: str, chat: Chat) -> dict[str, Any]:
    tuned = chat.served.get(model_id)
    if tuned is not None:
        return fine_tuned_object(tuned)
    chat.resolve_model(model_id)  # a 404 for an unknown name
    found = next((m for m in chat.models() if m.id == model_id), None)
    if found is None:  # a name the chat takes that the list does not hold
        raise NotFound(f"The model `{model_id}` does not exist", param="model")
    return found.model_dump()


@router.delete("/v1/models/{model_id:path}", dependencies=[KbKey],
               responses={403: {"model": ErrorResponse, "description": "a built-in model cannot be deleted"}})
async def delete_model(model_id: str, chat: Chat) -> dict[str, Any]:
    """OpenAI's models.delete for a fine-tuned model: {id, object: "model", deleted: true}; it stops answering at
    once (its adapter leaves memory, or the model server). Built-in models cannot be deleted (403)."""
    return await chat.served.delete(model_id)
