#!/usr/bin/env python3
"""Validate the router's labelled message sets eval/route_train.jsonl and eval/route_dev.jsonl.

Usage:
    python eval/check_route_set.py [FILE ...] [--threshold 0.8] [--tolerance 0.05]

With no FILE, checks eval/route_train.jsonl and eval/route_dev.jsonl. Each file must hold one JSON object
per line with the keys, in this order: "id", "message", "route" and optionally "history" (a non-empty list of
{"role": "user"|"assistant", "content": str} turns, ending with an assistant turn). Checks per file:
  * schema and key order, route in {rag, persona, both}, non-empty message;
  * ids unique and of the form <letters><digits> with one prefix per file;
  * no duplicate items: the same message (whitespace-normalised) with the same history;
    the same message with a different history is allowed, since the history can change the label;
  * at least 260 items in a file named *train*, 130 in a file named *dev*;
  * route shares within --tolerance of 40% rag, 40% persona, 20% both.
Across files: every pair of a *train* file and a *dev* file is searched for near-duplicates, pairs whose
character-bigram Jaccard similarity exceeds --threshold (text = history contents + message, lower-cased, with
whitespace and punctuation removed). Prints each problem and a summary, exits 1 if there are problems.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import unicodedata
from collections import Counter
from pathlib import Path

EVAL_DIR = Path(__file__).resolve().parent
DEFAULT_FILES = [EVAL_DIR / "route_train.jsonl", EVAL_DIR / "route_dev.jsonl"]

ROUTES = ("rag", "persona", "both")
TARGET_SHARES = {"rag": 0.40, "persona": 0.40, "both": 0.20}
MIN_ITEMS = {"train": 260, "dev": 130}
ROLES = ("user", "assistant")
ID_RE = re.compile(r"^([a-z]+)(\d+)$")


def normalise(text: str) -> str:
    """Lower-case and drop whitespace, punctuation and symbols (ASCII and full-width alike)."""
    text = unicodedata.normalize("NFKC", text).lower()
    return "".join(ch for ch in text if unicodedata.category(ch)[0] in "LN")


def bigrams(text: str) -> frozenset[str]:
    if len(text) < 2:
        return frozenset([text]) if text else frozenset()
    return frozenset(text[i : i + 2] for i in range(len(text) - 1))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a or not b:
        return 0.0
    return len(a & b) / len(a | b)


def item_text(item: dict) -> str:
    turns = item.get("history") or []
    return " ".join([t.get("content", "") for t in turns if isinstance(t, dict)] + [item["message"]])


def check_history(history: object, where: str, problems: list[str]) -> None:
    if not isinstance(history, list) or not history:
        problems.append(f"{where}: history must be a non-empty list")
        return
    for n, turn in enumerate(history):
        if not isinstance(turn, dict) or list(turn.keys()) != ["role", "content"]:
            problems.append(f"{where}: history[{n}] must be an object with keys role, content (in that order)")
            continue
        if turn["role"] not in ROLES:
            problems.append(f"{where}: history[{n}].role {turn['role']!r} not in {ROLES}")
        if not isinstance(turn["content"], str) or not turn["content"].strip():
            problems.append(f"{where}: history[{n}].content must be a non-empty string")
    if isinstance(history[-1], dict) and history[-1].get("role") != "assistant":
        problems.append(f"{where}: history must end with an assistant turn (the message is the next user turn)")


def load(path: Path, problems: list[str]) -> list[dict]:
    items: list[dict] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"{path}: cannot read as UTF-8: {exc}")
        return items
    for lineno, line in enumerate(lines, 1):
        where = f"{path.name}:{lineno}"
        if not line.strip():
            problems.append(f"{where}: empty line")
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"{where}: invalid JSON: {exc}")
            continue
        if not isinstance(obj, dict):
            problems.append(f"{where}: not a JSON object")
            continue
        keys = list(obj.keys())
        if keys not in (["id", "message", "route"], ["id", "message", "route", "history"]):
            problems.append(f"{where}: keys must be id, message, route[, history] in that order, got {keys}")
            if not {"id", "message", "route"} <= set(keys):
                continue
        if not isinstance(obj["id"], str) or not ID_RE.match(obj["id"]):
            problems.append(f"{where}: id {obj['id']!r} must look like t001 / d001")
        if not isinstance(obj["message"], str) or not obj["message"].strip():
            problems.append(f"{where}: message must be a non-empty string")
            continue
        if obj["route"] not in ROUTES:
            problems.append(f"{where}: route {obj['route']!r} not in {ROUTES}")
        if "history" in obj:
            check_history(obj["history"], where, problems)
        obj["_where"] = where
        items.append(obj)
    return items


def check_file(path: Path, items: list[dict], tolerance: float, problems: list[str]) -> None:
    ids = Counter(str(it["id"]) for it in items)
    for id_, n in ids.items():
        if n > 1:
            problems.append(f"{path.name}: id {id_} used {n} times")
    prefixes = {m.group(1) for it in items if (m := ID_RE.match(str(it["id"])))}
    if len(prefixes) > 1:
        problems.append(f"{path.name}: mixed id prefixes {sorted(prefixes)}")

    seen: dict[tuple[str, str], str] = {}
    for it in items:
        key = (" ".join(it["message"].split()), json.dumps(it.get("history"), ensure_ascii=False, sort_keys=True))
        if key in seen:
            problems.append(f"{path.name}: {it['id']} duplicates {seen[key]}: {it['message']!r}")
        else:
            seen[key] = it["id"]

    for kind, minimum in MIN_ITEMS.items():
        if kind in path.name and len(items) < minimum:
            problems.append(f"{path.name}: {len(items)} items, need at least {minimum}")

    counts = Counter(it["route"] for it in items)
    total = len(items) or 1
    for route, target in TARGET_SHARES.items():
        share = counts.get(route, 0) / total
        if abs(share - target) > tolerance:
            problems.append(
                f"{path.name}: route {route} is {share:.1%} of items, target {target:.0%} +/- {tolerance:.0%}"
            )

    n_hist = sum(1 for it in items if "history" in it)
    n_en = sum(1 for it in items if sum(c.isascii() and c.isalpha() for c in it["message"]) > len(it["message"]) / 2)
    shares = ", ".join(f"{r} {counts.get(r, 0)} ({counts.get(r, 0) / total:.1%})" for r in ROUTES)
    hist_routes = Counter(it["route"] for it in items if "history" in it)
    print(f"{path.name}: {len(items)} items: {shares}")
    print(
        f"    with history: {n_hist} ({n_hist / total:.1%}; "
        + ", ".join(f"{r} {hist_routes.get(r, 0)}" for r in ROUTES)
        + f"), mostly-English messages: {n_en} ({n_en / total:.1%})"
    )


def near_duplicates(train: list[dict], dev: list[dict], threshold: float) -> list[tuple[float, dict, dict]]:
    train_grams = [(it, bigrams(normalise(item_text(it)))) for it in train]
    hits = []
    for d in dev:
        dg = bigrams(normalise(item_text(d)))
        for t, tg in train_grams:
            score = jaccard(dg, tg)
            if score > threshold:
                hits.append((score, t, d))
    return sorted(hits, key=lambda h: -h[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", type=Path, help="JSONL files (default: route_train + route_dev)")
    parser.add_argument("--threshold", type=float, default=0.8, help="near-duplicate bigram Jaccard threshold")
    parser.add_argument("--tolerance", type=float, default=0.05, help="allowed deviation of each route share")
    args = parser.parse_args(argv)
    files = args.files or DEFAULT_FILES

    problems: list[str] = []
    loaded: dict[Path, list[dict]] = {}
    for path in files:
        if not path.is_file():
            problems.append(f"{path}: no such file")
            continue
        items = load(path, problems)
        check_file(path, items, args.tolerance, problems)
        loaded[path] = items

    trains = [p for p in loaded if "train" in p.name]
    devs = [p for p in loaded if "dev" in p.name]
    for tp in trains:
        for dp in devs:
            hits = near_duplicates(loaded[tp], loaded[dp], args.threshold)
            print(f"near-duplicates {tp.name} x {dp.name} (bigram Jaccard > {args.threshold}): {len(hits)}")
            for score, t, d in hits:
                problems.append(
                    f"near-duplicate {score:.2f}: {tp.name} {t['id']} {t['message']!r}"
                    f" ~ {dp.name} {d['id']} {d['message']!r}"
                )

    for p in problems:
        print("PROBLEM:", p)
    print("OK" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
