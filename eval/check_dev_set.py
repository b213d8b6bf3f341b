#!/usr/bin/env python3
"""Validate the retrieval dev question set eval/sanguo_dev.jsonl against the novel.

Usage:
    python eval/check_dev_set.py [CORPUS_PATH] [--dev-set PATH] [--supplement]

CORPUS_PATH defaults to ../shared/data/corpus/sanguo_yanyi.txt relative to the repository root.
Checks:
  * every line is a JSON object with the expected schema (id, question, chapter, answer_keywords,
    answerable; optional boolean "alias");
  * ids are unique;
  * >= 100 answerable questions, 8-15 unanswerable ones (chapter null, no keywords);
  * answerable questions cover >= 95 distinct chapters (1-120);
  * every answerable question has at least one keyword that occurs in its gold chapter's text
    (Chinese numerals are normalised to digits on both sides);
  * no question contains a 12-character substring copied verbatim from the novel.
--supplement checks a smaller set that adds to the first one (eval/sanguo_dev2.jsonl, eval/sanguo_dev3.jsonl): ids
like d3-001 or d2-a01, and no limits on counts or chapters covered; every other check is the same.
Prints each problem and exits 1 if there are any, 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # run as a script from anywhere: the chapter-number parser is ingest's

from ingest.chunking import cn_to_int  # noqa: E402

DEFAULT_CORPUS = REPO_ROOT.parent / "shared" / "data" / "corpus" / "sanguo_yanyi.txt"
DEFAULT_DEV_SET = REPO_ROOT / "eval" / "sanguo_dev.jsonl"

N_CHAPTERS = 120
MIN_ANSWERABLE = 100
UNANSWERABLE_RANGE = (8, 15)
MIN_CHAPTERS_COVERED = 95
COPY_WINDOW = 12
KEYWORD_LEN = (2, 6)
MAX_KEYWORDS = 3

_CN_DIGITS = {
    "零": 0,
    "〇": 0,
    "一": 1,
    "二": 2,
    "两": 2,
    "三": 3,
    "四": 4,
    "五": 5,
    "六": 6,
    "七": 7,
    "八": 8,
    "九": 9,
}
_CN_RUN = re.compile("[零〇一二两三四五六七八九十百千万]+")
_HEADING = re.compile(r"^\s*正文\s*第([零〇一二两三四五六七八九十百千0-9]+)回", re.MULTILINE)
_WS = re.compile(r"\s+")


def normalise(text: str) -> str:
    """Replace every run of Chinese numerals with its value in digits ("七百里" -> "700里")."""

    def repl(m: re.Match[str]) -> str:
        run = m.group(0)
        if len(run) > 1 and all(c in _CN_DIGITS for c in run):  # digit-by-digit, e.g. 一九八四
            return "".join(str(_CN_DIGITS[c]) for c in run)
        value = cn_to_int(run)
        return run if value is None else str(value)

    return _CN_RUN.sub(repl, text)


def split_chapters(text: str) -> dict[int, str]:
    matches = list(_HEADING.finditer(text))
    chapters: dict[int, str] = {}
    for i, m in enumerate(matches):
        num = cn_to_int(m.group(1))
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        if num is not None:
            chapters[num] = text[m.start() : end]
    return chapters


_ID = re.compile(r"q\d{3,}")
_SUPPLEMENT_ID = re.compile(r"d\d+-[a-z]?\d{2,}")


def check_schema(lineno: int, row: object, problems: list[str], id_pattern: re.Pattern[str] = _ID) -> bool:
    where = f"line {lineno}"
    if not isinstance(row, dict):
        problems.append(f"{where}: not a JSON object")
        return False
    ok = True
    required = {"id": str, "question": str, "answer_keywords": list, "answerable": bool}
    for key, typ in required.items():
        if key not in row:
            problems.append(f"{where}: missing field {key!r}")
            ok = False
        elif not isinstance(row[key], typ):
            problems.append(f"{where}: field {key!r} should be {typ.__name__}")
            ok = False
    if "chapter" not in row:
        problems.append(f"{where}: missing field 'chapter'")
        ok = False
    if "alias" in row and not isinstance(row["alias"], bool):
        problems.append(f"{where}: field 'alias' should be bool")
        ok = False
    if not ok:
        return False
    where = f"{row['id']} (line {lineno})"
    if not id_pattern.fullmatch(row["id"]):
        problems.append(f"{where}: id should look like {'q001' if id_pattern is _ID else 'd3-001'}")
    if not row["question"].strip():
        problems.append(f"{where}: empty question")
    kws = row["answer_keywords"]
    if row["answerable"]:
        ch = row["chapter"]
        if isinstance(ch, bool) or not isinstance(ch, int) or not 1 <= ch <= N_CHAPTERS:
            problems.append(f"{where}: answerable question needs an int chapter in 1..{N_CHAPTERS}")
            ok = False
        if not 1 <= len(kws) <= MAX_KEYWORDS:
            problems.append(f"{where}: needs 1-{MAX_KEYWORDS} answer_keywords, has {len(kws)}")
            ok = False
        for k in kws:
            if not isinstance(k, str) or not KEYWORD_LEN[0] <= len(k) <= KEYWORD_LEN[1]:
                problems.append(f"{where}: keyword {k!r} should be a string of {KEYWORD_LEN[0]}-{KEYWORD_LEN[1]} chars")
                ok = False
    else:
        if row["chapter"] is not None:
            problems.append(f"{where}: unanswerable question must have chapter null")
        if kws:
            problems.append(f"{where}: unanswerable question must have no answer_keywords")
        if row.get("alias"):
            problems.append(f"{where}: unanswerable question should not be marked alias")
    return ok


def read_rows(dev_path: Path, problems: list[str], id_pattern: re.Pattern[str] = _ID) -> list[dict]:
    """The dev set's records that pass the schema check (lines split on "\n" only: a U+2028 inside a JSON
    string is not a line end)."""
    rows: list[dict] = []
    lines = dev_path.read_text(encoding="utf-8").split("\n")
    if lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            problems.append(f"line {lineno}: blank line")
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            problems.append(f"line {lineno}: invalid JSON ({e})")
            continue
        if check_schema(lineno, row, problems, id_pattern):
            rows.append(row)
    return rows


def check_unique(rows: list[dict], problems: list[str]) -> None:
    seen: dict[str, int] = {}
    for r in rows:
        seen[r["id"]] = seen.get(r["id"], 0) + 1
    for qid, n in seen.items():
        if n > 1:
            problems.append(f"{qid}: duplicate id ({n} times)")
    seen_q: set[str] = set()
    for r in rows:
        if r["question"] in seen_q:
            problems.append(f"{r['id']}: duplicate question text")
        seen_q.add(r["question"])


def check_coverage(
    answerable: list[dict], unanswerable: list[dict], problems: list[str], limits: bool = True
) -> set[int]:
    """Counts of answerable and unanswerable questions, and the chapters the answerable ones cover (the limits
    apply to the main set only)."""
    covered = {r["chapter"] for r in answerable}
    if not limits:
        return covered
    if len(answerable) < MIN_ANSWERABLE:
        problems.append(f"only {len(answerable)} answerable questions (need >= {MIN_ANSWERABLE})")
    if not UNANSWERABLE_RANGE[0] <= len(unanswerable) <= UNANSWERABLE_RANGE[1]:
        problems.append(
            f"{len(unanswerable)} unanswerable questions (want {UNANSWERABLE_RANGE[0]}-{UNANSWERABLE_RANGE[1]})"
        )
    if len(covered) < MIN_CHAPTERS_COVERED:
        problems.append(f"answerable questions cover {len(covered)} chapters (need >= {MIN_CHAPTERS_COVERED})")
    return covered


def check_keywords(answerable: list[dict], chapters: dict[int, str], problems: list[str]) -> None:
    norm_chapters = {n: normalise(t) for n, t in chapters.items()}
    for r in answerable:
        body = chapters.get(r["chapter"])
        if body is None:
            continue
        norm_body = norm_chapters[r["chapter"]]
        hits = [k for k in r["answer_keywords"] if k in body or normalise(k) in norm_body]
        if not hits:
            problems.append(f"{r['id']}: no keyword of {r['answer_keywords']} occurs in chapter {r['chapter']}")


def check_copies(rows: list[dict], text: str, problems: list[str]) -> None:
    # Against both the raw text and the text with all whitespace removed (lines are hard-wrapped).
    flat_text = _WS.sub("", text)
    for r in rows:
        q_flat = _WS.sub("", r["question"])
        for i in range(len(q_flat) - COPY_WINDOW + 1):
            piece = q_flat[i : i + COPY_WINDOW]
            if piece in text or piece in flat_text:
                problems.append(f"{r['id']}: question copies novel text verbatim: {piece!r}")
                break


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus", nargs="?", default=str(DEFAULT_CORPUS), help="path to sanguo_yanyi.txt")
    ap.add_argument("--dev-set", default=str(DEFAULT_DEV_SET), help="path to the JSONL dev set")
    ap.add_argument(
        "--supplement",
        action="store_true",
        help="the file adds to the main set: ids like d3-001, no limits on counts or chapters covered",
    )
    args = ap.parse_args(argv)

    problems: list[str] = []
    corpus_path, dev_path = Path(args.corpus), Path(args.dev_set)
    for what, path in (("corpus", corpus_path), ("dev set", dev_path)):
        if not path.is_file():
            print(f"{what} not found: {path}")
            return 2

    text = corpus_path.read_text(encoding="utf-8")
    chapters = split_chapters(text)
    if sorted(chapters) != list(range(1, N_CHAPTERS + 1)):
        problems.append(f"corpus: expected chapters 1..{N_CHAPTERS}, found {len(chapters)}")
    rows = read_rows(dev_path, problems, _SUPPLEMENT_ID if args.supplement else _ID)
    check_unique(rows, problems)
    answerable = [r for r in rows if r["answerable"]]
    unanswerable = [r for r in rows if not r["answerable"]]
    covered = check_coverage(answerable, unanswerable, problems, limits=not args.supplement)
    check_keywords(answerable, chapters, problems)
    check_copies(rows, text, problems)

    n_alias = sum(1 for r in rows if r.get("alias"))
    print(
        f"{len(rows)} questions: {len(answerable)} answerable, {len(unanswerable)} unanswerable; "
        f"{len(covered)}/{N_CHAPTERS} chapters covered; {n_alias} alias questions"
    )
    missing = sorted(set(range(1, N_CHAPTERS + 1)) - covered)
    if missing:
        print(f"chapters without a question: {missing}")
    for p in problems:
        print(f"PROBLEM: {p}")
    if problems:
        print(f"FAILED: {len(problems)} problem(s)")
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
