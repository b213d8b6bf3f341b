"""Dialogue data sets in Alpaca, ShareGPT and OpenAI-messages form: read with per-record validation, write."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypedDict

from finetune.data.jsonfile import DataError, iter_records
from ingest.fsio import atomic_open

log = logging.getLogger(__name__)

Format = Literal["alpaca", "sharegpt", "openai"]
FORMATS: tuple[Format, ...] = ("alpaca", "sharegpt", "openai")
Role = Literal["user", "assistant"]

# ShareGPT speaker names as written by the tools that produce it (FastChat, LLaMA-Factory, Axolotl).
_SHAREGPT_ROLES: dict[str, Role | Literal["system"]] = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "model": "assistant",
    "system": "system",
}
# Tool-call turns: recognised so the problem names them, but a persona data set has no use for them.
_TOOL_ROLES = {"tool", "function", "function_call", "observation", "ipython"}


class Message(TypedDict):
    role: Role
    content: str


@dataclass
class Conversation:
    """One training example: an optional system prompt and alternating user/assistant turns ending with the
    assistant. `meta` carries provenance (chapter, alias, source file, ...) and survives the formats when
    they are written with `meta=True`."""

    messages: list[Message]
    system: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def pair(cls, user: str, assistant: str, system: str | None = None, **meta: Any) -> Conversation:
        return cls([{"role": "user", "content": user}, {"role": "assistant", "content": assistant}], system, meta)


@dataclass(frozen=True)
class Problem:
    """Why one record was skipped, and where it is (`line` is 1-based; `index` is the 0-based position in a
    JSON array file, None for JSONL)."""

    path: str
    line: int
    message: str
    index: int | None = None

    def __str__(self) -> str:
        where = f"line {self.line}" + (f" (index {self.index})" if self.index is not None else "")
        return f"{self.path}: {where}: {self.message}"


class _Invalid(Exception):
    """A record breaks the format; the message is the problem as a person should read it."""


def check_turns(system: str | None, messages: list[Message]) -> None:
    """Raise _Invalid unless the turns make a trainable conversation."""
    if system is not None and not system.strip():
        raise _Invalid("system prompt is empty (leave it out instead)")
    if not messages:
        raise _Invalid("no turns")
    for i, m in enumerate(messages, start=1):
        if not m["content"].strip():
            raise _Invalid(f"turn {i} ({m['role']}) has empty content")
        expected = "user" if i % 2 else "assistant"
        if m["role"] != expected:
            if i == 1:
                raise _Invalid(f"turn 1 is {m['role']}: a conversation must start with the user")
            raise _Invalid(f"turns {i - 1} and {i} are both {m['role']}: user and assistant must alternate")
    if messages[-1]["role"] != "assistant":
        raise _Invalid(f"turn {len(messages)} (the last) is the user's: nothing for the assistant to learn")


def _text(value: Any, what: str, required: bool = True) -> str:
    if value is None:
        if required:
            raise _Invalid(f"missing field {what!r}")
        return ""
    if not isinstance(value, str):
        raise _Invalid(f"{what!r} must be a string, not {type(value).__name__}")
    return value


def _optional_system(rec: dict[str, Any]) -> str | None:
    system = _text(rec.get("system"), "system", required=False)
    return system or None


def _meta(rec: dict[str, Any]) -> dict[str, Any]:
    meta = rec.get("meta")
    return dict(meta) if isinstance(meta, dict) else {}


def from_alpaca(rec: dict[str, Any]) -> Conversation:
    """instruction (+ "\\n" + input) is the last user turn, output the reply, history the earlier pairs."""
    instruction = _text(rec.get("instruction"), "instruction")
    extra = _text(rec.get("input"), "input", required=False)
    output = _text(rec.get("output"), "output")
    user = "\n".join(s for s in (instruction, extra) if s.strip())
    if not user.strip():
        raise _Invalid("'instruction' and 'input' are both empty")
    if not output.strip():
        raise _Invalid("'output' is empty")
    messages: list[Message] = []
    history = rec.get("history") or []
    if not isinstance(history, list):
        raise _Invalid(f"'history' must be a list of [question, answer] pairs, not {type(history).__name__}")
    for i, turn in enumerate(history):
        if not (isinstance(turn, list | tuple) and len(turn) == 2 and all(isinstance(t, str) for t in turn)):
            raise _Invalid(f"history[{i}] must be a [question, answer] pair of strings")
        if not turn[0].strip() or not turn[1].strip():
            raise _Invalid(f"history[{i}] has an empty question or answer")
        messages += [{"role": "user", "content": turn[0]}, {"role": "assistant", "content": turn[1]}]
    messages += [{"role": "user", "content": user}, {"role": "assistant", "content": output}]
    return Conversation(messages, _optional_system(rec), _meta(rec))


def from_sharegpt(rec: dict[str, Any]) -> Conversation:
    turns = rec.get("conversations")
    if turns is None:
        raise _Invalid("missing field 'conversations'")
    if not isinstance(turns, list):
        raise _Invalid(f"'conversations' must be a list, not {type(turns).__name__}")
    system = _optional_system(rec)
    messages: list[Message] = []
    for i, turn in enumerate(turns, start=1):
        if not isinstance(turn, dict):
            raise _Invalid(f"turn {i} must be an object with 'from' and 'value'")
        speaker = turn.get("from", turn.get("role"))
        value = turn.get("value", turn.get("content"))
        if not isinstance(speaker, str):
            raise _Invalid(f"turn {i} has no 'from'")
        if speaker in _TOOL_ROLES:
            raise _Invalid(f"turn {i} is a tool turn ({speaker!r}); tool calls are not supported in dialogue data")
        role = _SHAREGPT_ROLES.get(speaker)
        if role is None:
            raise _Invalid(f"turn {i} has unknown role {speaker!r} (expected human, gpt or system)")
        text = _text(value, f"turns[{i}].value")
        if role == "system":
            if i != 1 or system is not None:
                raise _Invalid(f"turn {i} is a system turn: only the first turn may be, and only without 'system'")
            if not text.strip():
                raise _Invalid("turn 1 (system) has empty content")
            system = text
            continue
        messages.append({"role": role, "content": text})
    conv = Conversation(messages, system, _meta(rec))
    if rec.get("tools"):
        conv.meta["tools"] = rec["tools"]
    return conv


def _openai_content(value: Any, i: int) -> str:
    if isinstance(value, list):  # content parts: only text parts make sense in dialogue data
        texts = []
        for part in value:
            if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                raise _Invalid(f"message {i} has a non-text content part; only text is supported")
            texts.append(part["text"])
        return "".join(texts)
    return _text(value, f"messages[{i}].content")


def from_openai(rec: dict[str, Any]) -> Conversation:
    msgs = rec.get("messages")
    if msgs is None:
        raise _Invalid("missing field 'messages'")
    if not isinstance(msgs, list):
        raise _Invalid(f"'messages' must be a list, not {type(msgs).__name__}")
    system: str | None = None
    messages: list[Message] = []
    for i, m in enumerate(msgs, start=1):
        if not isinstance(m, dict):
            raise _Invalid(f"message {i} must be an object with 'role' and 'content'")
        role = m.get("role")
        if role in _TOOL_ROLES or m.get("tool_calls") or m.get("function_call"):
            raise _Invalid(f"message {i} is a tool call or result; tool calls are not supported in dialogue data")
        if role in ("system", "developer"):
            if i != 1:
                raise _Invalid(f"message {i} is a {role} message: only the first message may be")
            system = _openai_content(m.get("content"), i)
            if not system.strip():
                raise _Invalid("message 1 (system) has empty content")
            continue
        if role not in ("user", "assistant"):
            raise _Invalid(f"message {i} has role {role!r} (expected system, user or assistant)")
        messages.append({"role": role, "content": _openai_content(m.get("content"), i)})
    return Conversation(messages, system, _meta(rec))


_READERS = {"alpaca": from_alpaca, "sharegpt": from_sharegpt, "openai": from_openai}


def record_format(rec: Any) -> Format | None:
    """Which format one record is in, judged by its fields."""
    if not isinstance(rec, dict):
        return None
    if "messages" in rec:
        return "openai"
    if "conversations" in rec:
        return "sharegpt"
    if "instruction" in rec or "output" in rec:
        return "alpaca"
    return None


def to_record(conv: Conversation, fmt: Format, meta: bool = False) -> dict[str, Any]:
    """The record for one conversation in `fmt` (`meta=True` adds the non-standard "meta" field)."""
    msgs = conv.messages
    rec: dict[str, Any]
    if fmt == "alpaca":
        pairs = [[msgs[i]["content"], msgs[i + 1]["content"]] for i in range(0, len(msgs) - 2, 2)]
        rec = {"instruction": msgs[-2]["content"], "input": "", "output": msgs[-1]["content"]}
        if conv.system:
            rec["system"] = conv.system
        if pairs:
            rec["history"] = pairs
    elif fmt == "sharegpt":
        who = {"user": "human", "assistant": "gpt"}
        rec = {"conversations": [{"from": who[m["role"]], "value": m["content"]} for m in msgs]}
        if conv.system:
            rec["system"] = conv.system
        if conv.meta.get("tools"):
            rec["tools"] = conv.meta["tools"]
    elif fmt == "openai":
        system = [{"role": "system", "content": conv.system}] if conv.system else []
        rec = {"messages": system + [{"role": m["role"], "content": m["content"]} for m in msgs]}
    else:
        raise ValueError(f"unknown format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if meta and conv.meta:
        rec["meta"] = conv.meta
    return rec


def read(path: str | Path, fmt: Format | None = None) -> tuple[list[Conversation], list[Problem]]:
    """Read every valid record of a data file; each invalid one becomes a Problem and is skipped.

    `fmt` None detects the format from the first records that look like any format.
    """
    convs, problems, _ = read_with_format(path, fmt)
    return convs, problems


def read_with_format(path: str | Path, fmt: Format | None = None) -> tuple[list[Conversation], list[Problem], Format]:
    """`read`, also saying which format was read (the detected one when `fmt` is None)."""
    path = Path(path)
    rows = list(iter_records(path))
    if fmt is None:
        try:
            fmt = detect_format(rec for _, _, rec, _ in rows)
        except DataError as exc:
            raise DataError(_no_format(rows, str(exc))) from None
    convs: list[Conversation] = []
    problems: list[Problem] = []
    reader = _READERS[fmt]
    for line, index, rec, error in rows:
        try:
            if error:
                raise _Invalid(error)
            if not isinstance(rec, dict):
                raise _Invalid(f"a record must be a JSON object, not {type(rec).__name__}")
            conv = reader(rec)
            check_turns(conv.system, conv.messages)
        except _Invalid as exc:
            problems.append(Problem(str(path), line, str(exc), index))
            continue
        conv.meta.setdefault("source", f"{path.name}:{line}")
        convs.append(conv)
    log.info("read %d conversations from %s (%s), %d skipped", len(convs), path, fmt, len(problems))
    return convs, problems, fmt


def _no_format(rows: list[tuple[int, int | None, Any, str | None]], why: str) -> str:
    """Why no format was found, from the rows read: none at all, no line that is JSON (its first bad lines), or
    `why` (JSON records in none of the formats)."""
    if not rows:
        return "no records: the file is empty, blank or an empty JSON array"
    bad = [(line, error) for line, _, _, error in rows if error]
    if len(bad) == len(rows):
        shown = "; ".join(f"line {line}: {error}" for line, error in bad[:3])
        return f"no line is a JSON record ({shown}{'; …' if len(bad) > 3 else ''})"
    return why


def detect_format(records: Iterable[Any], sample: int = 20) -> Format:
    """The format most of the first `sample` recognisable records are in."""
    votes: dict[Format, int] = {}
    for rec in records:
        fmt = record_format(rec)
        if fmt:
            votes[fmt] = votes.get(fmt, 0) + 1
            if sum(votes.values()) >= sample:
                break
    if not votes:
        raise DataError(
            "cannot tell the format: no record has 'instruction'/'output' (alpaca), 'conversations' (sharegpt) "
            "or 'messages' (openai); name it with --from"
        )
    return max(votes, key=lambda f: votes[f])


def write(path: str | Path, convs: Iterable[Conversation], fmt: Format, meta: bool = False) -> int:
    """Write conversations in `fmt`: JSON lines for a .jsonl path, else one JSON array. Returns the count.
    The file is renamed into place once whole: a half-written data set never sits under the real name."""
    path = Path(path)
    records = [to_record(c, fmt, meta) for c in convs]
    with atomic_open(path, "w") as f:
        if path.suffix == ".jsonl":
            for rec in records:
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        else:
            json.dump(records, f, ensure_ascii=False, indent=2)
            f.write("\n")
    return len(records)
