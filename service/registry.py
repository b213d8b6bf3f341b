"""The models this service answers as: the routes and personas it is built with, and the fine-tuned models jobs add
(finetune.jobs.registry), listed, described, deleted and bound to personas here."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from typing import TYPE_CHECKING, Any

from .errors import BadRequest, NotFound, ServiceError
from .protocol import ModelCard

if TYPE_CHECKING:
    from finetune.jobs.registry import FineTunedModel

    from .answer.persona import Engines
    from .settings import ServiceSettings

log = logging.getLogger(__name__)
FINE_TUNED_OWNER = "user"  # OpenAI's fine-tuned models are owned by the caller's organisation, not by the service
CLASSIFY_MAX_TOKENS = 16  # a label, not a paragraph: the default answer length of a classification model
CHAT_MAX_TOKENS = 512


class Forbidden(ServiceError, status=403, type="invalid_request_error", code="model_not_deletable"): ...


def fine_tuned_card(model: FineTunedModel) -> ModelCard:
    """The OpenAI model object of a fine-tuned model (created = when its job added it, unix seconds)."""
    what = "classifies" if model.task == "classify" else "chats"
    bound = f"; answers as persona {model.persona}" if model.persona else ""
    job = f" by job {model.job_id}" if model.job_id else ""
    return ModelCard(id=model.id, created=model.created_at, owned_by=FINE_TUNED_OWNER,
                     description=f"fine-tuned from {_base_name(model.base_model)}{job}: {what}{bound}")


def fine_tuned_object(model: FineTunedModel) -> dict[str, Any]:
    """The model object plus what the service knows of it: `parent` (the base, as vLLM names an adapter's base)
    and `kongming` {task, job_id, persona, system_prompt}."""
    return {
        **fine_tuned_card(model).model_dump(),
        "parent": _base_name(model.base_model),
        "kongming": {"task": model.task, "job_id": model.job_id, "persona": model.persona,
                     "system_prompt": model.system_prompt},
    }


class ServedModels:
    """The fine-tuned side of /v1/models: reads go to the registry every time (a model a worker adds, or another
    replica deletes, counts at once); deleting and binding also update what this process serves."""

    def __init__(self, settings: ServiceSettings, engines: Engines, builtin: list[str]) -> None:
        self.settings = settings
        self.engines = engines
        self.builtin = builtin

    def cards(self) -> tuple[list[ModelCard], dict[str, str]]:
        """The fine-tuned models' cards and the personas bound to them (persona name -> model id), from one read of
        the registry; none when it cannot be read (logged: the built-ins still list)."""
        try:
            models = self.engines.registry.list()
        except (OSError, sqlite3.Error) as exc:
            log.warning("fine-tuned model registry unreadable: %s", exc)
            return [], {}
        return [fine_tuned_card(m) for m in models], {m.persona: m.id for m in models if m.persona}

    def get(self, model_id: str) -> FineTunedModel | None:
        """The fine-tuned model `model_id` (None for a built-in name, an unknown one, or an unreadable registry)."""
        if model_id in self.builtin:
            return None
        try:
            return self.engines.registry.get(model_id)
        except (OSError, sqlite3.Error) as exc:
            log.warning("fine-tuned model registry unreadable: %s", exc)
            return None

    def require(self, model_id: str) -> FineTunedModel:
        """The fine-tuned model `model_id`. NotFound (404) otherwise; Forbidden (403) for a built-in model."""
        model = self.get(model_id)
        if model is None:
            if model_id in self.builtin:
                raise Forbidden(f"`{model_id}` is built into the service (a route or a persona), not a fine-tuned "
                                "model: change personas in the service's settings", param="model")
            raise NotFound(f"The model `{model_id}` does not exist", param="model")
        return model

    async def delete(self, model_id: str) -> dict[str, Any]:
        """OpenAI's models.delete: {id, object: "model", deleted: true}; the model stops answering at once."""
        self.require(model_id)
        deleted = await asyncio.to_thread(self.engines.registry.delete, model_id)
        await self.engines.forget(model_id)
        return {"id": model_id, "object": "model", "deleted": deleted}

    async def bind(self, model_id: str, persona: str | None) -> dict[str, Any]:
        """Make `persona` answer with the model (None: unbind it); the model object after the change.
        BadRequest: an unknown persona, or a classification model."""
        model = self.require(model_id)
        if persona is not None:
            if self.settings.persona(persona) is None:
                known = ", ".join(p.name for p in self.settings.personas)
                raise BadRequest(f"unknown persona {persona!r}; personas: {known}", param="persona")
            if model.task != "chat":
                raise BadRequest(f"`{model_id}` is a {model.task} model: only a chat model can speak as a persona",
                                 param="persona")
        try:
            bound = await asyncio.to_thread(self.engines.registry.bind, model_id, persona)
        except KeyError:
            raise NotFound(f"The model `{model_id}` does not exist", param="model") from None
        return fine_tuned_object(bound)


def fine_tuned_messages(model: FineTunedModel, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conversation as the model was trained on it: the training records' system prompt first when the request
    sends none (how a classification model gets its instruction)."""
    if model.system_prompt and not any(m["role"] in ("system", "developer") for m in messages):
        return [{"role": "system", "content": model.system_prompt}, *messages]
    return [{**m, "role": "system"} if m["role"] == "developer" else m for m in messages]


def default_max_tokens(model: FineTunedModel) -> int:
    return CLASSIFY_MAX_TOKENS if model.task == "classify" else CHAT_MAX_TOKENS


def _base_name(base: str) -> str:
    """The base as a client may see it: a name, not a server folder."""
    from pathlib import PurePath

    return PurePath(base).name if "/" in base or "\\" in base else base
