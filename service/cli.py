"""The `kongming` command: evaluation of the knowledge base (serve, ask and bench arrive with the service)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kongming", description="kongming: RAG + persona chat service.")
    sub = p.add_subparsers(dest="cmd", required=True)
    ev = sub.add_parser("eval", help="evaluate a component on a labelled set")
    evsub = ev.add_subparsers(dest="what", required=True)
    r = evsub.add_parser("retrieval", help="hit@1/3/5/10 and MRR@10 of retrieval on a question set")
    r.add_argument("--questions", type=Path, required=True, help="JSONL: id, question[, chapter, answer_keywords]")
    r.add_argument("-k", type=int, default=10, help="results written per question (default 10)")
    r.add_argument("--collection", help="knowledge base (default: KONGMING_COLLECTION or 'default')")
    r.add_argument("--mode", choices=["hybrid", "dense", "keyword"], default="hybrid")
    r.add_argument("--store", type=Path, help="embedded Chroma folder (default: KONGMING_STORE_DIR or DATA_DIR/store)")
    r.add_argument("--data-dir", type=Path, help="data root (default: KONGMING_DATA_DIR or ./data)")
    r.add_argument("--chroma-url", help="Chroma server URL instead of the embedded store")
    r.add_argument("--aliases", type=Path, help="alias table to merge with the mined one")
    r.add_argument("--no-aliases", action="store_true", help="do not expand names (for comparison)")
    r.add_argument("--json", type=Path, help="write per-question results here (JSONL, input order)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    if args.cmd == "eval" and args.what == "retrieval":
        return _eval_retrieval(args)
    return 2


def _eval_retrieval(args: argparse.Namespace) -> int:
    from ingest.errors import IngestError
    from ingest.evaluation import evaluate, load_questions, write_jsonl
    from ingest.retrieval import Retriever
    from ingest.settings import get_settings

    try:
        settings = get_settings(
            data_dir=args.data_dir,
            store_dir=args.store,
            chroma_url=args.chroma_url,
            collection=args.collection,
            aliases_file=args.aliases,
        )
        questions = load_questions(args.questions)
        retriever = Retriever(settings, use_aliases=not args.no_aliases)
        if not retriever.documents:
            print(f"error: collection {retriever.store.name!r} is empty: run `ingest add` first", file=sys.stderr)
            return 1
        report = evaluate(retriever, questions, args.k, args.mode)
    except (IngestError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        write_jsonl(report.per_question, args.json)
    if report.graded:
        print(json.dumps(report.summary(), ensure_ascii=False))
    else:
        print(f"{report.questions} questions without gold fields: wrote results only", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
