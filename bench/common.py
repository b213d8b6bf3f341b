"""Shared by the benchmark scripts: percentiles, latency summaries, writing a result file."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any


def pct(xs: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1) of a non-empty list."""
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def summary(xs: list[float]) -> dict[str, float]:
    if not xs:
        return {"n": 0}
    return {"n": len(xs), "p50_ms": round(statistics.median(xs), 3), "p95_ms": round(pct(xs, 0.95), 3),
            "p99_ms": round(pct(xs, 0.99), 3), "max_ms": round(max(xs), 3), "mean_ms": round(statistics.fmean(xs), 3)}


def write_result(out: dict[str, Any], path: Path | None) -> None:
    """Print the result as JSON and write it to `path` (when given)."""
    text = json.dumps(out, ensure_ascii=False, indent=2) + "\n"
    print(text, end="")
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
