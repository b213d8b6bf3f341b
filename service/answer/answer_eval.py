"""`kongming eval answers`: the `kongming-rag` answerer over a question set, as a client gets it — how often the
answer holds an answer keyword, how often it declines (rightly and wrongly), how long it is, how long it takes —
for the whole set and for each half of the dev split (ingest.evaluation.question_half)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ingest.evaluation import Question, normalise_numbers, question_half

from ..protocol import CITATION_MARKER
from .extractive import NO_ANSWER, NO_ANSWER_EN

# What a generated answer says when the passages do not answer (RAG_SYSTEM asks for it): counted as a decline.
GENERATED_DECLINES = ("资料中没有", "没有相关内容", "没有找到", "not in the passages", "no relevant")


@dataclass
class AnswerRecord:
    id: str
    half: str  # "tuning" | "held-out"
    question: str
    answerable: bool
    answer: str
    path: str  # "extractive" | "generative"
    declined: bool
    keyword: bool  # an answer keyword is in the answer (answerable questions)
    chars: int
    citations: int
    latency_ms: float


def is_decline(text: str) -> bool:
    """The extractive decline (either language), or a generated answer that says the passages do not answer."""
    t = text.strip()
    return t in (NO_ANSWER, NO_ANSWER_EN) or any(p in t for p in GENERATED_DECLINES)


def holds_keyword(answer: str, keywords: Sequence[str]) -> bool:
    """An answer keyword occurs in the answer, numerals compared as numbers (三日 = 3日); citation markers ([3]) are
    no part of the answer's text."""
    text = normalise_numbers(CITATION_MARKER.sub("", answer))
    return any(normalise_numbers(k) in text for k in keywords)


async def answer_questions(chat: Any, questions: Sequence[Question]) -> list[AnswerRecord]:
    """Ask each question of `chat` (a ChatService) on the `kongming-rag` model, one at a time; the latency is the
    whole turn: embedding, retrieval, the answer (extracted or generated)."""
    from .chat import RAG_MODEL

    out = []
    for q in questions:
        started = time.perf_counter()
        reply = await chat.reply([{"role": "user", "content": q.question}], model=RAG_MODEL)
        done = await reply.complete()
        latency = (time.perf_counter() - started) * 1000
        path = "generative" if reply.engine is not None else "extractive"  # a failed model server falls back
        answerable = q.answerable is not False and bool(q.answer_keywords)
        out.append(AnswerRecord(
            id=q.id, half=question_half(q.id), question=q.question, answerable=answerable, answer=done.text,
            path=path,
            declined=is_decline(done.text), keyword=answerable and holds_keyword(done.text, q.answer_keywords),
            chars=len(done.text), citations=len(reply.citations), latency_ms=round(latency, 1),
        ))
    return out


def summarize(records: Sequence[AnswerRecord]) -> dict[str, Any]:
    """keyword_rate (share of answerable questions whose answer holds a keyword), declined (share of unanswerable
    ones declined), false_declines (share of answerable ones declined), mean_chars (answers that are not declines),
    latency p50/p95 in ms."""
    ans = [r for r in records if r.answerable]
    unans = [r for r in records if not r.answerable]
    answered = [r for r in records if not r.declined]
    lat = sorted(r.latency_ms for r in records)

    def share(part: int, whole: int) -> float | None:
        return round(part / whole, 4) if whole else None

    return {
        "questions": len(records),
        "answerable": len(ans),
        "unanswerable": len(unans),
        "keyword_rate": share(sum(r.keyword for r in ans), len(ans)),
        "declined": share(sum(r.declined for r in unans), len(unans)),
        "false_declines": share(sum(r.declined for r in ans), len(ans)),
        "mean_chars": round(statistics.mean(r.chars for r in answered), 1) if answered else None,
        "max_chars": max((r.chars for r in answered), default=None),
        "latency_ms_p50": round(statistics.median(lat), 1) if lat else None,
        "latency_ms_p95": round(lat[min(len(lat) - 1, int(0.95 * len(lat)))], 1) if lat else None,
    }


def report(records: Sequence[AnswerRecord]) -> dict[str, Any]:
    """The summary of the whole set, of each half of the dev split, and which path answered."""
    paths = sorted({r.path for r in records})
    out: dict[str, Any] = {"path": "+".join(paths) if paths else None, "all": summarize(records)}
    for half in ("tuning", "held-out"):
        part = [r for r in records if r.half == half]
        if part:
            out[half] = summarize(part)
    return out


def as_rows(records: Sequence[AnswerRecord]) -> list[dict[str, Any]]:
    return [asdict(r) for r in records]
