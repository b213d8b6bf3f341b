"""OpenAI wire models for chat completions and models, plus kongming's extension fields."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from .validation import (
    CONVERSATION,
    INVALID_TEXT,
    _lone_surrogate,
    can_honour,
    check_last_turn,
    limit_error,
    refuse,
    text_parts_only,
)

if TYPE_CHECKING:  # engines import errors, which import the wire models here: no import cycle at run time
    from .engines.base import SamplingParams

Route = Literal["rag", "persona", "both"]

NOT_TEXT = {
    "image_url": "images are not supported: send the message as text",
    "input_audio": "audio input is not supported: send the message as text",
    "file": "file content parts are not supported: send the text, or add the file with POST /v1/kb/documents",
}


class ContentPart(BaseModel):
    """A text part (any role) or a refusal part (an assistant's, as a client replays it)."""

    model_config = ConfigDict(extra="ignore")  # e.g. cache-control hints some clients add

    type: Literal["text", "refusal"]
    text: str | None = None
    refusal: str | None = None


# The fields of each message role in OpenAI's chat reference besides role and content (all accepted; those that do
# not apply to answering are ignored: tool calls in history, audio ids, annotations).
ROLE_FIELDS: dict[str, frozenset[str]] = {
    "system": frozenset({"name"}),
    "developer": frozenset({"name"}),
    "user": frozenset({"name"}),
    "assistant": frozenset({"name", "refusal", "tool_calls", "function_call", "audio", "annotations"}),
    "tool": frozenset({"tool_call_id"}),
    "function": frozenset({"name"}),
}


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    refusal: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    function_call: dict[str, Any] | None = None
    audio: dict[str, Any] | None = None
    annotations: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _text_parts_only(cls, v: Any) -> Any:
        return text_parts_only(v, NOT_TEXT)

    @model_validator(mode="after")
    def _fields_of_the_role(self) -> ChatMessage:
        given = {f for f in self.model_fields_set - {"role", "content"} if getattr(self, f) is not None}
        wrong = sorted(given - ROLE_FIELDS[self.role])
        if wrong:
            raise refuse(f"{', '.join(wrong)} is not a field of a {self.role} message", "extra_forbidden_for_role")
        return self

    def text(self) -> str:
        if self.content is None:
            return self.refusal or ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text or p.refusal or "" for p in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: bool = False
    include_obfuscation: bool | None = None  # OpenAI pads its stream events; there is nothing to pad here


class KongmingOptions(BaseModel):
    """Extension object `kongming` in a request: force a route, pick a persona, restrict retrieval."""

    model_config = ConfigDict(extra="forbid")

    route: Route | None = None
    persona: str | None = None
    chapters: tuple[int, int] | None = Field(default=None, description="inclusive chapter range for retrieval")
    doc_ids: list[str] | None = None
    k: int | None = Field(default=None, ge=1, le=50)
    vector_store_ids: list[str] | None = Field(
        default=None, min_length=1, max_length=16,
        description="retrieve from these vector stores (knowledge bases) instead of the default one",
    )  # fmt: skip
    sources: Literal["append", "none"] | None = Field(
        default=None, description="append: the numbered sources follow the answer text (default: the server's)"
    )

    @field_validator("chapters")
    @classmethod
    def _a_range(cls, v: tuple[int, int] | None) -> tuple[int, int] | None:
        if v is not None and not 0 <= v[0] <= v[1]:
            raise ValueError(f"chapters must be [first, last] with 0 <= first <= last, got {list(v)}")
        return v


def _forces_a_call(v: Any) -> bool:
    return v not in (None, "none", "auto")


# Fields of the reference that ask for what this service cannot do: (asks for it?, what the 400 says).
CANNOT: dict[str, tuple[Callable[[Any], bool], str]] = {
    "n": (lambda v: v is not None and v > 1, "n > 1 is not supported: ask for one choice"),
    # tools, tool_choice and a JSON response_format go to the model when it can honour them (ChatService.reply)
    "functions": (bool, "functions are not supported by this service: use tools"),
    "function_call": (_forces_a_call, "function_call: a forced function call is not supported (no functions here)"),
    "logprobs": (bool, "logprobs are not supported by this service"),
    "top_logprobs": (bool, "top_logprobs is not supported by this service (no logprobs)"),
    "logit_bias": (bool, "logit_bias is not supported by this service"),
    "response_format": (lambda v: v is not None and v.get("type") not in (None, "text", "json_object", "json_schema"),
                        "response_format type must be text, json_object or json_schema"),
    "audio": (lambda v: v is not None, "audio output is not supported: this service answers in text"),
    "modalities": (lambda v: bool(v) and set(v) != {"text"}, "only the text modality is supported"),
    "web_search_options": (lambda v: v is not None, "web search is not supported by this service"),
}  # fmt: skip


class OpenAIRequest(BaseModel):
    """A request body: unknown fields are refused (400), as OpenAI does, and so is text that is not Unicode."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: Any) -> Any:
        bad = _lone_surrogate(data)
        if bad is not None:  # valid JSON ("\ud800"), but no model, tokenizer or UTF-8 encoder takes it
            message = f"{bad or 'a string'} is not valid Unicode text (it holds a lone surrogate)"
            raise PydanticCustomError(INVALID_TEXT, message, {"param": bad or None})
        return data


class ChatCompletionRequest(OpenAIRequest):
    """The request body of POST /v1/chat/completions: every field of OpenAI's reference is accepted, those that do
    not apply here are ignored, those that cannot be honoured are refused by name (CANNOT); unknown fields are
    refused (400), as OpenAI does. It validates itself across fields (`check_limits` for the limits that are
    settings) and builds its sampling parameters."""

    model_config = ConfigDict(extra="forbid")

    model: str
    messages: list[ChatMessage]
    stream: bool = Field(default=False, strict=True)  # "yes" / "1" are refused, as OpenAI refuses them
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1, strict=True)
    max_completion_tokens: int | None = Field(default=None, ge=1, strict=True)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    n: int | None = Field(default=None, ge=1, strict=True)
    stop: str | list[str] | None = None
    # a 64-bit signed integer, as vLLM takes it (torch's generator refuses more): a 400 naming `seed` otherwise
    seed: int | None = Field(default=None, strict=True, ge=-(2**63), le=2**63 - 1)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    logprobs: bool | None = Field(default=None, strict=True)
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    logit_bias: dict[str, int] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    functions: list[dict[str, Any]] | None = None
    function_call: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    audio: dict[str, Any] | None = None
    modalities: list[Literal["text", "audio"]] | None = None
    web_search_options: dict[str, Any] | None = None
    # accepted and ignored: they tune OpenAI's own storage, caching, billing or reasoning, not this answer
    user: str | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None
    reasoning_effort: str | None = None
    verbosity: str | None = None
    prediction: dict[str, Any] | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    prompt_cache_options: dict[str, Any] | None = None
    safety_identifier: str | None = None
    moderation: dict[str, Any] | None = None
    kongming: KongmingOptions | None = None


    @field_validator("stop")
    @classmethod
    def _stop_list(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list) and len(v) > 4:
            raise ValueError("at most 4 stop sequences")
        return v

    @field_validator(*CANNOT)
    @classmethod
    def _can_honour(cls, v: Any, info: ValidationInfo) -> Any:
        return can_honour(CANNOT, v, info)

    @field_validator("stream_options")
    @classmethod
    def _only_when_streaming(cls, v: StreamOptions | None, info: ValidationInfo) -> StreamOptions | None:
        if v is not None and not info.data.get("stream"):  # as OpenAI answers it
            raise refuse("The 'stream_options' parameter is only allowed when 'stream' is enabled.", "invalid_value")
        return v

    @field_validator("messages")
    @classmethod
    def _a_turn_to_answer(cls, v: list[ChatMessage]) -> list[ChatMessage]:
        if v and v[-1].role == "tool":  # an agent's tool loop: the model reads the results, then answers the user
            if not any(m.role == "user" and m.text().strip() for m in v):
                raise refuse("tool results need the user message they serve: none was sent", CONVERSATION)
            return v
        check_last_turn(v, "messages", "message")
        return v

    @property
    def max_new_tokens(self) -> int | None:
        """The completion-token limit asked for (None: the route's default)."""
        return self.max_completion_tokens or self.max_tokens

    def check_limits(self, max_messages: int, max_tokens_cap: int) -> None:
        """The limits that are settings; a pydantic ValidationError naming the field, like the checks above."""
        problem: tuple[str, str, Any] | None = None
        if len(self.messages) > max_messages:  # checked before anything reads the conversation
            problem = ("messages", f"too many messages: {len(self.messages)} > {max_messages}", len(self.messages))
        elif self.max_new_tokens is not None and self.max_new_tokens > max_tokens_cap:
            field = "max_completion_tokens" if self.max_completion_tokens else "max_tokens"
            why = f"max_tokens is too large: {self.max_new_tokens}. This service allows at most {max_tokens_cap}"
            problem = (field, why, self.max_new_tokens)
        if problem is not None:
            raise limit_error(type(self).__name__, *problem)

    def conversation(self) -> list[dict[str, Any]]:
        """The turns a model reads, `developer` as `system`; an assistant's `tool_calls` and the `tool` results
        that answer them are kept in OpenAI's shape (a model server that takes tools reads them; the in-process
        engine reads the text turns only). Legacy `function` results are left out."""
        roles = {"developer": "system", "system": "system", "user": "user", "assistant": "assistant"}
        out: list[dict[str, Any]] = []
        for m in self.messages:
            if m.role in roles:
                out.append({"role": roles[m.role], "content": m.text()})
                if m.role == "assistant" and m.tool_calls:
                    out[-1]["tool_calls"] = m.tool_calls
            elif m.role == "tool":
                out.append({"role": "tool", "content": m.text(), "tool_call_id": m.tool_call_id or ""})
        return out

    def to_sampling_params(self) -> SamplingParams:
        """Sampling as asked; `max_tokens` is left to the route (its default, capped), see ChatService.reply."""
        from .engines.base import SamplingParams

        return SamplingParams(
            temperature=0.7 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            stop=[self.stop] if isinstance(self.stop, str) else list(self.stop or []),
            seed=self.seed,
            tools=self.tools or None,
            tool_choice=self.tool_choice,
            parallel_tool_calls=self.parallel_tool_calls,
            response_format=self.response_format if (self.response_format or {}).get("type") != "text" else None,
        )


# how an answer's text cites a passage: [n], n being the citation's `index`
CITATION_MARKER = re.compile(r"\[(\d{1,3})\]")


class Citation(BaseModel):
    index: int = Field(description="the [n] used in the answer")
    doc_id: str
    document: str
    source: str = Field(default="", description="the document's file name (never a path on the server)")
    chapter: int | None = None
    chapter_unit: str | None = Field(default=None, description="what the chapter counts: 回, 章, 节, 卷 …")
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
    content: str | None
    tool_calls: list[dict[str, Any]] | None = None


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
