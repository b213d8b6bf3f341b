"""Checks shared by the request models (chat completions, responses): refusals by name, turns to answer,
limits that are settings, text that is Unicode."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pydantic import ValidationError, ValidationInfo
from pydantic_core import InitErrorDetails, PydanticCustomError

# Error types of the refusals; errors.validation_error shows their messages as they are.
UNSUPPORTED = "unsupported"  # the reference defines it, this service cannot honour it
CONVERSATION = "conversation"  # the messages do not make a turn to answer
INVALID_TEXT = "invalid_text"  # a string that is no Unicode text; its context's `param` names where


def refuse(message: str, kind: str = UNSUPPORTED) -> PydanticCustomError:
    """The error a validator raises for a field this service refuses; `kind` becomes the OpenAI error code."""
    return PydanticCustomError(kind, message)


def text_parts_only(content: Any, refused: dict[str, str]) -> Any:
    """`content` unchanged unless one of its parts is of a type in `refused` (type -> why): then refuse it."""
    for part in content if isinstance(content, list) else ():
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in refused:
            raise refuse(refused[kind])
    return content


def check_last_turn(turns: Sequence[Any], what: str, last: str) -> None:
    """Refuse a conversation with nothing to answer: `turns` (chat messages or Responses input items, each with
    `role` and `text()`) must end with a non-empty user turn; `what`/`last` name them in the message."""
    if not turns:
        raise refuse(f"{what} must contain at least one message", CONVERSATION)
    if turns[-1].role != "user":
        raise refuse(f"the last {last} must be a user message", CONVERSATION)
    if not turns[-1].text().strip():
        raise refuse("the last user message is empty", CONVERSATION)


def limit_error(model: str, field: str, why: str, value: Any) -> ValidationError:
    """A pydantic ValidationError naming `field`, for limits that are settings (checked after parsing)."""
    return ValidationError.from_exception_data(model, [InitErrorDetails(type=refuse(why), loc=(field,), input=value)])


# Content parts the reference defines that carry something other than text: refused by name, not by schema.


def can_honour(cannot: dict[str, tuple[Callable[[Any], bool], str]], v: Any, info: ValidationInfo) -> Any:
    """`v` unchanged unless `cannot[field]` (asks, why) says this value asks for what the service cannot do."""
    asks, why = cannot[str(info.field_name)]
    if asks(v):
        raise refuse(why)
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
