"""Fitting the router on a labelled message set, and scoring it: accuracy, per-route precision/recall."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .router import ROUTES, Router, RouterModel, Signals, conversation_features, knn_features


@dataclass
class LabelledMessage:
    id: str
    messages: list[dict[str, str]]  # history + the message, as chat messages
    route: str | None

    @property
    def text(self) -> str:
        return self.messages[-1]["content"]


def load_messages(path: Path) -> list[LabelledMessage]:
    """`{"id", "message", "route"[, "history"]}` per line; extra fields are ignored, route may be absent. Lines end
    at "\n" only: a message may hold U+2028 and the like (valid JSON, as `json.dumps(ensure_ascii=False)` writes)."""
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").split("\n"), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            msg = rec["message"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{n}: expected a JSON object with a 'message' field ({exc})") from exc
        route = rec.get("route")
        if route is not None and route not in ROUTES:
            raise ValueError(f"{path}:{n}: route must be one of {', '.join(ROUTES)}, not {route!r}")
        history = [h for h in rec.get("history") or [] if h.get("role") in ("user", "assistant")]
        out.append(LabelledMessage(str(rec.get("id", n)), [*history, {"role": "user", "content": msg}], route))
    return out


def fit_router(
    items: Sequence[LabelledMessage],
    signals: Signals,
    embed: Callable[[list[str]], np.ndarray],
    c: float = 1.0,
    meta: dict[str, Any] | None = None,
) -> RouterModel:
    """Multinomial logistic regression on the features; the similarity features of each training message
    are computed leaving that message out, as they will be for unseen messages."""
    from sklearn.linear_model import LogisticRegression

    items = [i for i in items if i.route]
    emb = np.asarray(embed([i.text for i in items]), dtype=np.float32)
    labels = np.asarray([ROUTES.index(i.route) for i in items])
    rows = []
    for j, item in enumerate(items):
        _, f, _ = conversation_features(item.messages, signals)
        f.update(knn_features(emb[j], emb, labels, exclude=j))
        rows.append(f)
    names = list(rows[0])
    x = np.asarray([[r[n] for n in names] for r in rows], dtype=np.float64)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale < 1e-9] = 1.0
    clf = LogisticRegression(C=c, max_iter=2000, class_weight="balanced")
    clf.fit((x - mean) / scale, labels)
    order = [list(clf.classes_).index(i) for i in range(len(ROUTES))]
    return RouterModel(
        features=names,
        mean=mean.round(6).tolist(),
        scale=scale.round(6).tolist(),
        coef=clf.coef_[order].round(6).tolist(),
        intercept=clf.intercept_[order].round(6).tolist(),
        examples=[{"message": i.text, "route": str(i.route)} for i in items],
        meta={"c": c, "n": len(items), **(meta or {})},
    )


@dataclass
class RouteReport:
    total: int
    graded: int
    accuracy: float
    per_route: dict[str, dict[str, float]]
    confusion: dict[str, dict[str, int]]  # gold -> predicted -> count

    def summary(self) -> dict[str, Any]:
        return {"messages": self.total, "accuracy": round(self.accuracy, 4), "per_route": self.per_route,
                "confusion": self.confusion}


def evaluate_router(router: Router, items: Sequence[LabelledMessage]) -> tuple[RouteReport, list[dict[str, Any]]]:
    """Decide every message; return the scores (for labelled ones) and one output record per message."""
    records = []
    gold: list[str] = []
    routed: list[str] = []
    for item in items:
        d = router.decide(item.messages)
        records.append({"id": item.id, "route": d.route, "scores": d.scores, "reason": d.reason})
        if item.route:
            gold.append(item.route)
            routed.append(d.route)
    per_route, confusion = route_scores(gold, routed)
    accuracy = sum(confusion[r][r] for r in ROUTES) / len(gold) if gold else 0.0
    return RouteReport(len(items), len(gold), accuracy, per_route, confusion), records


def route_scores(gold: list[str], routed: list[str]) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, int]]]:
    """Per-route precision, recall, F1 and support, and the confusion matrix (gold -> routed -> count)."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    labels: list[str] = list(ROUTES)
    if not gold:  # sklearn refuses empty input; nothing graded scores zero
        zero = {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
        return {r: dict(zero) for r in labels}, {g: dict.fromkeys(labels, 0) for g in labels}
    matrix = confusion_matrix(gold, routed, labels=labels)
    p, rec, f1, support = precision_recall_fscore_support(gold, routed, labels=labels, zero_division=0.0)
    per_route: dict[str, dict[str, float]] = {
        r: {"precision": round(float(p[i]), 4), "recall": round(float(rec[i]), 4), "f1": round(float(f1[i]), 4),
            "support": int(support[i])}
        for i, r in enumerate(labels)
    }  # fmt: skip
    return per_route, {g: {r: int(matrix[i, j]) for j, r in enumerate(labels)} for i, g in enumerate(labels)}
