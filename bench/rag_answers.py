"""Benchmark: the offline (extractive) RAG answerer on the retrieval dev set — how often the answer text holds
an answer keyword, how often an unanswerable question is declined — and the relevance threshold sweep behind
`service.answer.extractive.MIN_COVERAGE` (best passage's IDF-weighted share of the question's terms).

    python bench/rag_answers.py --data-dir data --collection default --out bench/results/rag_answers.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from datetime import date
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=Path("data"))
    p.add_argument("--collection", default="default")
    p.add_argument("--questions", type=Path, default=Path("eval/sanguo_dev.jsonl"))
    p.add_argument("-k", type=int, default=5)
    p.add_argument("--out", type=Path)
    args = p.parse_args()

    from ingest.evaluation import load_questions
    from ingest.retrieval import Retriever
    from ingest.settings import get_settings
    from service.answer.answer_eval import is_decline
    from service.answer.extractive import MIN_COVERAGE, coverage, extractive_answer, lexicon_of

    retriever = Retriever(get_settings(data_dir=args.data_dir, collection=args.collection))
    rows = []
    for q in load_questions(args.questions):
        hits = retriever.retrieve(q.question, args.k)
        terms = retriever.query_terms(q.question)
        answer = extractive_answer(q.question, hits, terms, lexicon_of(retriever))
        answerable = bool(q.chapter)
        rows.append({
            "id": q.id,
            "answerable": answerable,
            "best_coverage": max((coverage(h.text, terms) for h in hits), default=0.0),
            "declined": is_decline(answer.text),
            "keyword_in_answer": answerable and any(k in answer.text for k in q.answer_keywords),
            "keyword_in_passages": answerable and any(k in h.text for h in hits for k in q.answer_keywords),
            "chars": len(answer.text),
        })
    ans = [r for r in rows if r["answerable"]]
    unans = [r for r in rows if not r["answerable"]]
    sweep = []
    for t in [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3]:
        kept = sum(r["best_coverage"] >= t for r in ans)
        declined = sum(r["best_coverage"] < t for r in unans)
        sweep.append({"threshold": t, "answerable_answered": kept, "unanswerable_declined": declined,
                      "accuracy": round((kept + declined) / len(rows), 4)})
    result = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {platform.processor() or '?'}, Python {platform.python_version()}",
        "command": " ".join(sys.argv),
        "questions": len(rows),
        "answerable": len(ans),
        "unanswerable": len(unans),
        "min_coverage": MIN_COVERAGE,
        "keyword_in_answer": sum(r["keyword_in_answer"] for r in ans),
        "keyword_in_top_k_passages": sum(r["keyword_in_passages"] for r in ans),
        "answerable_declined": sum(r["declined"] for r in ans),
        "unanswerable_declined": sum(r["declined"] for r in unans),
        "mean_answer_chars": round(sum(r["chars"] for r in ans) / max(len(ans), 1), 1),
        "threshold_sweep": sweep,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "threshold_sweep"}, ensure_ascii=False))
    for s in sweep:
        print(s)
    if args.out:
        args.out.write_text(json.dumps({**result, "per_question": rows}, ensure_ascii=False, indent=1) + "\n",
                            encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
