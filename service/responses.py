"""OpenAI Responses API wire models (POST /v1/responses, text only): the request, the Response object, its events."""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationInfo, field_validator

from .protocol import Citation, KongmingExtension, KongmingOptions, OpenAIRequest
from .validation import can_honour, check_last_turn, limit_error, refuse, text_parts_only

if TYPE_CHECKING:
    from .engines.base import SamplingParams

TEXT_PARTS = ("input_text", "output_text", "text", "refusal")
NOT_TEXT = {
    "input_image": "images are not supported: send the message as text",
    "input_audio": "audio input is not supported: send the message as text",
    "input_file": "file inputs are not supported: send the text, or add the file with POST /v1/kb/documents",
}


class InputPart(BaseModel):
    """A text part of an input message: input_text (any role), output_text or refusal (a replayed answer)."""

    model_config = ConfigDict(extra="ignore")  # annotations, logprobs of a replayed output_text

    type: Literal["input_text", "output_text", "text", "refusal"]
    text: str | None = None
    refusal: str | None = None


class InputMessage(BaseModel):
    """A message item of `input` (EasyInputMessage, or an output message as a client replays it)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[InputPart]
    id: str | None = None
    status: str | None = None
    phase: str | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _text_parts_only(cls, v: Any) -> Any:
        return text_parts_only(v, NOT_TEXT)

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text or p.refusal or "" for p in self.content)


def _forces_a_call(v: Any) -> bool:
    return v not in (None, "none", "auto")


def _file_search(tool: Any) -> bool:
    """A file_search tool naming the vector stores to search (its filters and ranking options are not supported)."""
    ids = tool.get("vector_store_ids") if isinstance(tool, dict) else None
    return (tool.get("type") == "file_search" and isinstance(ids, list) and bool(ids)
            and all(isinstance(i, str) for i in ids) and not tool.get("filters") and not tool.get("ranking_options"))


# Fields of the reference that ask for what this service cannot do: (asks for it?, what the 400 says).
CANNOT: dict[str, tuple[Any, str]] = {
    "tools": (lambda v: bool(v) and not all(_file_search(t) for t in v), "only the file_search tool is supported "
              "here, with vector_store_ids (the knowledge bases to search; see /v1/vector_stores)"),
    "tool_choice": (lambda v: _forces_a_call(v) and not (isinstance(v, dict) and v.get("type") == "file_search"),
                    "tool_choice: a forced tool call other than {'type': 'file_search'} is not supported"),
    "previous_response_id": (bool, "previous_response_id is not supported: responses are not stored, send the "
                                   "conversation as `input` items"),
    "conversation": (bool, "conversation is not supported: responses are not stored, send the conversation as "
                           "`input` items"),
    "background": (bool, "background responses are not supported"),
    "prompt": (bool, "prompt templates are not supported: send `instructions` and `input`"),
    "top_logprobs": (bool, "top_logprobs is not supported by this service"),
    "text": (lambda v: bool(v) and (v.get("format") or {}).get("type", "text") != "text",
             "only text.format {'type': 'text'} is supported"),
}  # fmt: skip


class ResponsesRequest(OpenAIRequest):
    """The request body of POST /v1/responses (text). Harmless fields of the reference are accepted and ignored,
    those that cannot be honoured are refused by name (CANNOT), unknown ones too."""

    model_config = ConfigDict(extra="forbid")

    model: str
    input: list[InputMessage] = Field(description="a string (one user message) or message items")
    instructions: str | None = None
    stream: bool = False
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    previous_response_id: str | None = None
    conversation: str | dict[str, Any] | None = None
    background: bool | None = None
    prompt: dict[str, Any] | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    text: dict[str, Any] | None = None
    # accepted and ignored: OpenAI's storage, billing, reasoning and tool settings that change nothing here
    store: bool | None = None
    metadata: dict[str, str] | None = None
    user: str | None = None
    parallel_tool_calls: bool | None = None
    max_tool_calls: int | None = None
    reasoning: dict[str, Any] | None = None
    truncation: Literal["auto", "disabled"] | None = None
    include: list[str] | None = None
    service_tier: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    stream_options: dict[str, Any] | None = None
    kongming: KongmingOptions | None = None


    @field_validator(*CANNOT)
    @classmethod
    def _can_honour(cls, v: Any, info: ValidationInfo) -> Any:
        return can_honour(CANNOT, v, info)

    @field_validator("input", mode="before")
    @classmethod
    def _messages_only(cls, v: Any) -> Any:
        if isinstance(v, str):  # the short form: one user message
            return [{"role": "user", "content": v}]
        for item in v if isinstance(v, list) else ():
            kind = item.get("type", "message") if isinstance(item, dict) else None
            if kind != "message":
                raise refuse(f"input items of type {kind!r} are not supported: send text messages (no tools here)")
        return v

    @field_validator("input")
    @classmethod
    def _a_turn_to_answer(cls, v: list[InputMessage]) -> list[InputMessage]:
        check_last_turn(v, "input", "input item")
        return v

    def check_limits(self, max_messages: int, max_tokens_cap: int) -> None:
        """The limits that are settings; a pydantic ValidationError naming the field."""
        problem: tuple[str, str, Any] | None = None
        count = len(self.input)
        if count > max_messages:
            problem = ("input", f"too many input items: {count} > {max_messages}", count)
        elif self.max_output_tokens is not None and self.max_output_tokens > max_tokens_cap:
            why = f"max_output_tokens is too large: {self.max_output_tokens}. This service allows at most " \
                  f"{max_tokens_cap}"
            problem = ("max_output_tokens", why, self.max_output_tokens)
        if problem is not None:
            raise limit_error(type(self).__name__, *problem)

    def conversation_messages(self) -> list[dict[str, str]]:
        """The turns a model reads: `instructions` first as a system message, `developer` as `system`."""
        out = [{"role": "system", "content": self.instructions}] if self.instructions else []
        roles = {"developer": "system", "system": "system", "user": "user", "assistant": "assistant"}
        return out + [{"role": roles[m.role], "content": m.text()} for m in self.input]

    def file_search(self) -> tuple[list[str], int | None]:
        """The vector stores the file_search tools name (none: no search) and their max_num_results."""
        tools = [t for t in self.tools or [] if t.get("type") == "file_search"]
        ids = list(dict.fromkeys(i for t in tools for i in t["vector_store_ids"]))
        k = min((int(t["max_num_results"]) for t in tools if t.get("max_num_results")), default=None)
        return ids, k

    def to_sampling_params(self) -> SamplingParams:
        from .engines.base import SamplingParams

        return SamplingParams(temperature=0.7 if self.temperature is None else self.temperature,
                              top_p=1.0 if self.top_p is None else self.top_p)


# -- the Response object and its parts -------------------------------------------------------------------------


class FileCitation(BaseModel):
    """A citation as the Responses API annotates output text: the cited document, at the position of its [n]."""

    type: Literal["file_citation"] = "file_citation"
    file_id: str = Field(description="the knowledge base's document id")
    filename: str = Field(description="the document's title or file name")
    index: int = Field(description="position in the text just after the citation's [n] (the end when absent)")


class OutputText(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[FileCitation] = Field(default_factory=list)
    logprobs: list[Any] = Field(default_factory=list)


class OutputMessage(BaseModel):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    status: Literal["in_progress", "completed", "incomplete"]
    content: list[OutputText] = Field(default_factory=list)


class FileSearchResult(BaseModel):
    file_id: str
    filename: str
    score: float
    text: str
    attributes: dict[str, str | float | bool] = Field(default_factory=dict)


class FileSearchCall(BaseModel):
    """The file_search tool's output item: the query searched and, with include ["file_search_call.results"],
    the passages found (those the answer cites first, as numbered)."""

    id: str = Field(default_factory=lambda: "fs_" + uuid.uuid4().hex)
    type: Literal["file_search_call"] = "file_search_call"
    status: Literal["in_progress", "searching", "completed", "incomplete", "failed"] = "completed"
    queries: list[str] = Field(default_factory=list)
    results: list[FileSearchResult] | None = None
    _files: dict[str, tuple[str, str]] = PrivateAttr(default_factory=dict)

    def set_files(self, files: dict[str, tuple[str, str]]) -> None:
        """document id -> (vector store file id, file name): how the answer's annotations name what they cite."""
        self._files = files

    def cite(self, annotation: FileCitation) -> None:
        annotation.file_id, annotation.filename = self._files.get(annotation.file_id,
                                                                  (annotation.file_id, annotation.filename))


class ResponseUsage(BaseModel):
    input_tokens: int = 0
    input_tokens_details: dict[str, int] = Field(default_factory=lambda: {"cached_tokens": 0})
    output_tokens: int = 0
    output_tokens_details: dict[str, int] = Field(default_factory=lambda: {"reasoning_tokens": 0})
    total_tokens: int = 0

    @classmethod
    def of(cls, input_tokens: int, output_tokens: int) -> ResponseUsage:
        return cls(input_tokens=input_tokens, output_tokens=output_tokens, total_tokens=input_tokens + output_tokens)


class IncompleteDetails(BaseModel):
    reason: Literal["max_output_tokens"] = "max_output_tokens"


def response_id() -> str:
    return "resp_" + uuid.uuid4().hex


def message_id() -> str:
    return "msg_" + uuid.uuid4().hex


class ResponseObject(BaseModel):
    """The Response object (`object: "response"`), with the `kongming` extension (route, citations) once done."""

    id: str = Field(default_factory=response_id)
    object: Literal["response"] = "response"
    created_at: int = Field(default_factory=lambda: int(time.time()))
    status: Literal["in_progress", "completed", "incomplete", "failed"] = "in_progress"
    error: dict[str, Any] | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    model: str
    output: list[FileSearchCall | OutputMessage] = Field(default_factory=list)
    parallel_tool_calls: bool = False
    previous_response_id: None = None
    reasoning: dict[str, Any] = Field(default_factory=lambda: {"effort": None, "summary": None})
    store: bool = False
    temperature: float | None = None
    text: dict[str, Any] = Field(default_factory=lambda: {"format": {"type": "text"}})
    tool_choice: str | dict[str, Any] = "none"
    tools: list[Any] = Field(default_factory=list)
    top_p: float | None = None
    truncation: str = "disabled"
    usage: ResponseUsage | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    user: str | None = None
    kongming: KongmingExtension | None = None

    @classmethod
    def started(cls, body: ResponsesRequest) -> ResponseObject:
        return cls(model=body.model, instructions=body.instructions, max_output_tokens=body.max_output_tokens,
                   temperature=body.temperature, top_p=body.top_p, metadata=body.metadata or {}, user=body.user,
                   tools=body.tools or [], tool_choice=body.tool_choice or ("auto" if body.tools else "none"))


def cite_annotations(text: str, cited: list[Citation]) -> list[FileCitation]:
    """One file_citation per citation, placed just after its first [n] in the text (at the end when not cited)."""
    out = []
    for c in cited:
        marker = f"[{c.index}]"
        at = text.find(marker)
        out.append(FileCitation(file_id=c.doc_id, filename=c.document or c.source or c.doc_id,
                                index=at + len(marker) if at >= 0 else len(text)))
    return out


def finished(
    start: ResponseObject, item_id: str, text: str, finish_reason: str, usage: ResponseUsage,
    ext: KongmingExtension, search: FileSearchCall | None = None,
) -> ResponseObject:
    """The response once answered: completed, or incomplete when the client's max_output_tokens cut it. A cut at
    the route's own default length (a persona's `max_tokens`) is a completed answer: the client asked for no
    limit, and clients such as the openai SDK's `responses.stream(...).get_final_response()` fail without
    `response.completed`."""
    cut = finish_reason == "length" and start.max_output_tokens is not None
    part = OutputText(text=text, annotations=cite_annotations(text, ext.citations))
    if search is not None:
        for note in part.annotations:
            search.cite(note)
    item = OutputMessage(id=item_id, status="incomplete" if cut else "completed", content=[part])
    return start.model_copy(update={
        "status": "incomplete" if cut else "completed", "incomplete_details": IncompleteDetails() if cut else None,
        "output": [search, item] if search else [item], "usage": usage, "kongming": ext,
    })  # fmt: skip
