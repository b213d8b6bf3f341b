"""OpenAI wire models for chat completions and models, plus kongming's extension fields."""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Route = Literal["rag", "persona", "both"]


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: bool = False


class KongmingOptions(BaseModel):
    """Extension object `kongming` in a request: force a route, pick a persona, restrict retrieval."""

    model_config = ConfigDict(extra="forbid")

    route: Route | None = None
    persona: str | None = None
    chapters: tuple[int, int] | None = Field(default=None, description="inclusive chapter range for retrieval")
    doc_ids: list[str] | None = None
    k: int | None = Field(default=None, ge=1, le=50)


class ChatCompletionRequest(BaseModel):
    """The request body of POST /v1/chat/completions. Unknown fields are refused (400), as OpenAI does."""

    model_config = ConfigDict(extra="forbid")

    model: str
    messages: list[ChatMessage]
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    n: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    user: str | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    kongming: KongmingOptions | None = None

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: Any) -> Any:
        bad = _lone_surrogate(data)
        if bad is not None:  # valid JSON ("\ud800"), but no model, tokenizer or UTF-8 encoder takes it
            raise ValueError(f"{bad or 'a string'} is not valid Unicode text (it holds a lone surrogate)")
        return data

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list) and len(v) > 4:
            raise ValueError("at most 4 stop sequences")
        return v


def _lone_surrogate(value: Any, path: str = "") -> str | None:
    """The path of the first string in a JSON value that cannot be encoded as UTF-8, else None."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path
        return None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _lone_surrogate(key, path) if isinstance(key, str) else None
        if found is None:
            found = _lone_surrogate(item, f"{path}.{key}" if path else str(key))
        if found is not None:
            return found
    return None


class Citation(BaseModel):
    index: int = Field(description="the [n] used in the answer")
    doc_id: str
    document: str
    source: str = ""
    chapter: int | None = None
    chapter_title: str | None = None
    snippet: str
    score: float
    chunk_id: str


class RouteInfo(BaseModel):
    route: Route
    forced: bool = False
    persona: str | None = None
    scores: dict[str, float] = Field(default_factory=dict)
    reason: str = ""


class KongmingExtension(BaseModel):
    route: RouteInfo
    citations: list[Citation] = Field(default_factory=list)
    note: str | None = None


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: str = "stop"
    logprobs: None = None


def completion_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex


class ChatCompletion(BaseModel):
    id: str = Field(default_factory=completion_id)
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[Choice]
    usage: Usage
    kongming: KongmingExtension


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "kongming"
    description: str = ""


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail
