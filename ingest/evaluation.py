"""Retrieval evaluation on a question set: hit@k and MRR@10 where a hit is a gold-chapter chunk with a keyword."""

from __future__ import annotations

import hashlib
import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import IngestError
from .normalize import normalise_numbers as normalise_numbers  # its home is normalize.py; callers import it here too
from .retrieval import Mode, RetrievedChunk, Retriever

CUTOFFS = (1, 3, 5, 10)


@dataclass
class Question:
    id: str
    question: str
    chapter: int | None = None
    answer_keywords: list[str] = field(default_factory=list)
    answerable: bool | None = None

    @property
    def gradable(self) -> bool:
        return bool(self.answerable is not False and self.chapter is not None and self.answer_keywords)


def load_questions(path: Path) -> list[Question]:
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            chapter = obj.get("chapter")
            out.append(
                Question(
                    id=str(obj["id"]),
                    question=str(obj["question"]),
                    chapter=int(chapter) if chapter is not None else None,
                    answer_keywords=[str(k) for k in obj.get("answer_keywords") or []],
                    answerable=obj.get("answerable"),
                )
            )
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise IngestError(f"{path}:{n}: not a question record ({exc}); need at least id and question") from exc
    return out


SPLIT_SEED = 12
Half = str  # "tuning" | "held-out"


def question_half(question_id: str, seed: int = SPLIT_SEED) -> Half:
    """Which half of a dev set a question belongs to: "tuning" or "held-out", by a hash of the seed and its id
    (stable across runs, machines and file order; a question added later keeps the others where they were)."""
    digest = hashlib.sha256(f"{seed}:{question_id}".encode()).digest()
    return "tuning" if digest[0] % 2 == 0 else "held-out"


def split_questions(questions: Sequence[Question], seed: int = SPLIT_SEED) -> tuple[list[Question], list[Question]]:
    """(tuning, held-out): a dev set split once by `question_half`. Fit thresholds and rules on the first, report
    the second."""
    tuning = [q for q in questions if question_half(q.id, seed) == "tuning"]
    return tuning, [q for q in questions if question_half(q.id, seed) != "tuning"]


def first_hit(q: Question, results: Sequence[RetrievedChunk]) -> int | None:
    """1-based rank of the first result from the gold chapter containing an answer keyword."""
    keys = [normalise_numbers(k) for k in q.answer_keywords]
    for rank, r in enumerate(results, start=1):
        if r.chapter == q.chapter and any(k in normalise_numbers(r.text) for k in keys):
            return rank
    return None


@dataclass
class EvalReport:
    mode: str
    k: int
    questions: int
    graded: int
    hits: dict[int, float]
    mrr10: float
    top5_chars_mean: float
    top5_chars_max: int
    latency_ms_p50: float
    per_question: list[dict[str, Any]]
    latency_ms_p95: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "k": self.k,
            "questions": self.questions,
            "graded": self.graded,
            **{f"hit@{c}": round(v, 4) for c, v in self.hits.items()},
            "mrr@10": round(self.mrr10, 4),
            "top5_chars_mean": round(self.top5_chars_mean, 1),
            "top5_chars_max": self.top5_chars_max,
            "latency_ms_p50": round(self.latency_ms_p50, 1),
            "latency_ms_p95": round(self.latency_ms_p95, 1),
        }


def evaluate(retriever: Retriever, questions: Sequence[Question], k: int = 10, mode: Mode = "hybrid") -> EvalReport:
    depth = max(k, 10)
    ranks: list[int | None] = []
    rows: list[dict[str, Any]] = []
    top5_chars: list[int] = []
    latencies: list[float] = []
    for q in questions:
        t0 = time.perf_counter()
        results = retriever.retrieve(q.question, depth, mode=mode)
        latencies.append((time.perf_counter() - t0) * 1000)
        top5_chars.append(sum(len(r.text) for r in results[:5]))
        rows.append(
            {
                "id": q.id,
                "results": [
                    {"chunk_id": r.chunk_id, "chapter": r.chapter, "text": r.text, "score": r.score}
                    for r in results[:k]
                ],
            }
        )
        if q.gradable:
            ranks.append(first_hit(q, results))
    n = len(ranks)
    hits = {c: (sum(1 for r in ranks if r is not None and r <= c) / n if n else 0.0) for c in CUTOFFS if c <= depth}
    mrr = sum(1.0 / r for r in ranks if r is not None and r <= 10) / n if n else 0.0
    return EvalReport(
        mode=mode,
        k=k,
        questions=len(questions),
        graded=n,
        hits=hits,
        mrr10=mrr,
        top5_chars_mean=statistics.mean(top5_chars) if top5_chars else 0.0,
        top5_chars_max=max(top5_chars) if top5_chars else 0,
        latency_ms_p50=statistics.median(latencies) if latencies else 0.0,
        per_question=rows,
        latency_ms_p95=_nearest_rank(latencies, 0.95),
    )


def _nearest_rank(xs: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1); 0 for no values."""
    if not xs:
        return 0.0
    ordered = sorted(xs)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def write_jsonl(rows: Sequence[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
