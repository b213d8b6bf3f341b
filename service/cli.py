"""The `kongming` command: serve the chat service, ask one question, fit and evaluate the router and retrieval."""

from __future__ import annotations

import argparse
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
    an = evsub.add_parser("answers", help="keyword rate, declines, false declines, length and latency of RAG answers")
    an.add_argument("--questions", type=Path, action="append", required=True,
                    help="JSONL: id, question, answer_keywords, answerable (repeat to join several files)")
    an.add_argument("--json", type=Path, help="write one record per question here (JSONL, input order)")
    an.add_argument("--upstream-url", help="OpenAI-compatible server: answers are generated there (with --rag-model)")
    an.add_argument("--rag-model", help="model at the upstream that writes RAG answers (default: KONGMING_RAG_MODEL)")
    _kb_args(an)
    rt = evsub.add_parser("route", help="accuracy, per-route precision/recall and confusion matrix of the router")
    rt.add_argument("--messages", type=Path, required=True, help="JSONL: id, message[, route, history]")
    rt.add_argument("--json", type=Path, help="write {id, route, scores, reason} per message (JSONL, input order)")
    _kb_args(rt)
    fit = sub.add_parser("fit", help="fit a component on a labelled set")
    fitsub = fit.add_subparsers(dest="what", required=True)
    fr = fitsub.add_parser("router", help="fit the router's weights on labelled messages")
    fr.add_argument("--messages", type=Path, default=Path("eval/route_train.jsonl"))
    fr.add_argument("--out", type=Path, help="where to write the model (default: the one the service ships)")
    fr.add_argument("--c", type=float, default=1.0, help="inverse regularisation strength")
    _kb_args(fr)
    ask = sub.add_parser("ask", help="answer one message and print the route, the answer and the citations")
    ask.add_argument("message")
    ask.add_argument("--route", choices=["auto", "rag", "persona", "both"], default="auto")
    ask.add_argument("--persona", help="persona name (default: KONGMING_DEFAULT_PERSONA)")
    ask.add_argument("--max-tokens", type=int)
    ask.add_argument("--json", action="store_true", help="print the whole result as JSON")
    _kb_args(ask)
    sv = sub.add_parser("serve", help="start the OpenAI-compatible API and the chat page (/ui)")
    sv.add_argument("--host", help="default 127.0.0.1 (KONGMING_HOST)")
    sv.add_argument("--port", type=int, help="default 8000 (KONGMING_PORT)")
    sv.add_argument("--upstream-url", help="OpenAI-compatible server (vLLM) to use instead of in-process models")
    sv.add_argument("--no-ui", action="store_true", help="do not mount the Gradio page")
    _kb_args(sv)
    wk = sub.add_parser("worker", help="run fine-tuning jobs (apart from `kongming serve`: finetune_worker=false)")
    wk.add_argument("--data-dir", type=Path, help="data root shared with the API (default: KONGMING_DATA_DIR)")
    wk.add_argument("--once", action="store_true", help="exit when no job is waiting")
    wk.add_argument("--nproc", type=int, default=1, help="processes per training: torchrun (DDP), one GPU each")
    keys = sub.add_parser("keys", help="API keys: the keys file stores sha256 digests only")
    keys.add_argument("--data-dir", type=Path, help="data root holding api_keys.json (default: KONGMING_DATA_DIR)")
    keys.add_argument("--keys-file", type=Path, help="default: KONGMING_KEYS_FILE or DATA_DIR/api_keys.json")
    keysub = keys.add_subparsers(dest="what", required=True)
    ka = keysub.add_parser("add", help="create a key and print it once")
    ka.add_argument("--name", default="", help="who or what the key is for")
    keysub.add_parser("list", help="ids, names, dates and state of the keys (never the keys)")
    kr = keysub.add_parser("revoke", help="revoke a key by id (a running service stops accepting it at once)")
    kr.add_argument("key_id")
    return p


def _kb_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--collection", help="knowledge base (default: KONGMING_COLLECTION or 'default')")
    p.add_argument("--data-dir", type=Path, help="data root (default: KONGMING_DATA_DIR or ./data)")
    p.add_argument("--chroma-url", help="Chroma server URL instead of the embedded store")


def main(argv: list[str] | None = None) -> int:
    """`kongming ...`; a setting that cannot be read (a `KONGMING_*` variable, kongming.toml) is a one-line error
    naming it (exit 2), not a traceback."""
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from ingest.settings import settings_error_lines

    try:
        return _main(argv)
    except (ValidationError, SettingsError) as exc:  # the same lines as ingest's
        for line in settings_error_lines(exc):
            print(f"error: {line}", file=sys.stderr)
    return 2


def _main(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    if args.cmd == "keys":
        from .keys import keys_command
        from .settings import get_service_settings

        settings = get_service_settings(data_dir=args.data_dir, keys_file=args.keys_file)
        return keys_command(settings, args.what, getattr(args, "name", ""), getattr(args, "key_id", None))
    if args.cmd == "worker":
        from finetune.jobs.worker import run_worker

        from .settings import get_service_settings

        logging.getLogger().setLevel(logging.INFO)
        run_worker(get_service_settings(data_dir=args.data_dir).data_dir, once=args.once, nproc=args.nproc)
        return 0
    from . import commands

    handler = {
        ("eval", "retrieval"): commands.eval_retrieval,
        ("eval", "route"): commands.eval_route,
        ("eval", "answers"): commands.eval_answers,
        ("fit", "router"): commands.fit_router,
        ("ask", None): commands.ask,
        ("serve", None): commands.serve,
    }[(args.cmd, getattr(args, "what", None))]
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
