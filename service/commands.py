"""What the `kongming` subcommands do, behind the thin argument parsing in cli.py."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ingest.headings import chapter_label

from .settings import ServiceSettings, get_service_settings, ingest_settings_for

if TYPE_CHECKING:
    from ingest.evaluation import EvalReport
    from ingest.retrieval import Mode
    from ingest.settings import IngestSettings


def _settings(args: argparse.Namespace, **extra: Any) -> ServiceSettings:
    return get_service_settings(data_dir=getattr(args, "data_dir", None), **extra)


def _kb(args: argparse.Namespace, settings: ServiceSettings) -> Any:
    from .answer.retrieval import KnowledgeBase

    ingest = ingest_settings_for(settings, collection=args.collection, chroma_url=args.chroma_url)
    return KnowledgeBase(ingest)


def quiet_model_loading() -> None:
    """`kongming ask` prints an answer: no weights-loading bar and no advisory FutureWarning of the model
    libraries in it. Errors still show: exceptions, and log records at ERROR and above."""
    for name, value in (("HF_HUB_DISABLE_PROGRESS_BARS", "1"), ("TRANSFORMERS_VERBOSITY", "error"),
                        ("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")):
        os.environ.setdefault(name, value)
    for module in ("transformers", "torch", "peft", "huggingface_hub", "accelerate"):
        for category in (FutureWarning, DeprecationWarning):
            warnings.filterwarnings("ignore", category=category, module=module)
    if "transformers" in sys.modules:  # imported already: its settings were read at import
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


def fit_router(args: argparse.Namespace) -> int:
    from .answer.chat import router_signals
    from .answer.router import DEFAULT_MODEL, RouterModel
    from .answer.router_fit import fit_router as fit
    from .answer.router_fit import load_messages

    settings = _settings(args)
    kb = _kb(args, settings)
    if not kb.available():
        return _fail(f"{kb.error} (the router's signals come from the knowledge base)")
    try:
        items = load_messages(args.messages)
    except (OSError, ValueError) as exc:
        return _fail(str(exc))
    # the signals (names, keyword index, embedder) of the live knowledge base, as the service will see them
    model = fit(items, router_signals(settings, kb), kb.retriever.embed_queries, c=args.c,
                meta={"messages": str(args.messages), "collection": kb.settings.collection})
    out = args.out or DEFAULT_MODEL
    model.save(out)
    RouterModel.load(out)
    print(f"fitted on {model.meta['n']} messages ({len(model.features)} features): wrote {out}")
    return 0


def retrieval_report(
    settings: IngestSettings, questions: Path, k: int = 10, mode: Mode = "hybrid", use_aliases: bool = True
) -> EvalReport:
    """hit@1/3/5/10 and MRR@10 of the knowledge base's retrieval on a question set (JSONL); IngestError when the
    questions cannot be read or the collection is empty."""
    from ingest.errors import IngestError
    from ingest.evaluation import evaluate, load_questions
    from ingest.retrieval import Retriever

    asked = load_questions(questions)
    retriever = Retriever(settings, use_aliases=use_aliases)
    if not retriever.documents:
        raise IngestError(f"collection {retriever.store.name!r} is empty: run `ingest add` first")
    return evaluate(retriever, asked, k, mode)


def eval_retrieval(args: argparse.Namespace) -> int:
    from ingest.errors import IngestError
    from ingest.evaluation import write_jsonl
    from ingest.settings import get_settings

    try:
        settings = get_settings(data_dir=args.data_dir, store_dir=args.store, chroma_url=args.chroma_url,
                                collection=args.collection, aliases_file=args.aliases)
        report = retrieval_report(settings, args.questions, args.k, args.mode, use_aliases=not args.no_aliases)
    except (IngestError, OSError) as exc:
        return _fail(str(exc))
    if args.json:
        write_jsonl(report.per_question, args.json)
    if report.graded:
        print(json.dumps(report.summary(), ensure_ascii=False))
    else:
        print(f"{report.questions} questions without gold fields: wrote results only", file=sys.stderr)
    return 0


def eval_route(args: argparse.Namespace) -> int:
    from .answer.chat import load_router
    from .answer.router_fit import evaluate_router, load_messages

    settings = _settings(args)
    kb = _kb(args, settings)
    try:
        items = load_messages(args.messages)
        router = load_router(settings, kb)
    except (OSError, ValueError) as exc:
        return _fail(str(exc))
    if not kb.available():
        print(f"warning: {kb.error}; routing without knowledge-base signals", file=sys.stderr)
    report, records = evaluate_router(router, items)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            for r in records:
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    if report.graded:
        print(json.dumps(report.summary(), ensure_ascii=False))
        print(_confusion_table(report.confusion), file=sys.stderr)
    else:
        print(f"{report.total} messages without labels: wrote decisions only", file=sys.stderr)
    return 0


def eval_answers(args: argparse.Namespace) -> int:
    """`kongming eval answers`: the rag answerer (extractive, or generated when an upstream rag model is set) over
    question files; prints the summary (all, tuning and held-out halves) as JSON."""
    from ingest.errors import IngestError
    from ingest.evaluation import load_questions, write_jsonl

    from .answer.answer_eval import answer_questions, as_rows, report
    from .app import build_chat_service

    quiet_model_loading()
    extra = {k: v for k, v in (("upstream_url", args.upstream_url), ("rag_model", args.rag_model)) if v}
    settings = _settings(args, **extra)
    try:
        questions = [q for path in args.questions for q in load_questions(path)]
    except (IngestError, OSError) as exc:
        return _fail(str(exc))
    chat = build_chat_service(settings, ingest_settings_for(settings, collection=args.collection,
                                                              chroma_url=args.chroma_url))
    if not chat.kb.available():
        return _fail(str(chat.kb.error))

    async def run() -> list[Any]:
        try:
            return await answer_questions(chat, questions)
        finally:
            await chat.engines.aclose()

    records = asyncio.run(run())
    if args.json:
        write_jsonl(as_rows(records), args.json)
    print(json.dumps(report(records), ensure_ascii=False))
    return 0


def _confusion_table(confusion: dict[str, dict[str, int]]) -> str:
    routes = list(confusion)
    lines = ["gold \\ routed " + " ".join(f"{r:>8}" for r in routes)]
    for g in routes:
        lines.append(f"{g:>14} " + " ".join(f"{confusion[g][r]:>8}" for r in routes))
    return "\n".join(lines)


def ask(args: argparse.Namespace) -> int:
    from ingest.errors import IngestError

    from .app import build_chat_service
    from .errors import ServiceError, error_body
    from .protocol import KongmingOptions

    quiet_model_loading()
    settings = _settings(args)
    chat = build_chat_service(settings, ingest_settings_for(settings, collection=args.collection,
                                                              chroma_url=args.chroma_url))
    route = None if args.route == "auto" else args.route
    options = KongmingOptions(route=route, persona=args.persona)

    def unanswerable(reply: Any) -> int:  # 1 when the knowledge base asked could not be read (missing, empty)
        return 1 if reply.note and reply.note == chat.kb.error else 0

    async def run() -> int:
        try:
            reply = await chat.reply([{"role": "user", "content": args.message}], options=options,
                                     max_tokens=args.max_tokens)
            if args.json:
                done = await reply.complete()
                print(json.dumps({"route": reply.route_info.model_dump(), "answer": done.text,
                                  "citations": [c.model_dump() for c in reply.citations], "note": reply.note},
                                 ensure_ascii=False, indent=1))
                return unanswerable(reply)
            print(f"route: {reply.decision.route} — {reply.decision.reason}")
            async for delta in reply.stream():
                print(delta.text, end="", flush=True)
            print()
            for c in reply.citations:
                where = (f"{chapter_label(c.chapter, c.chapter_unit)} {c.chapter_title or ''}".strip()
                         if c.chapter is not None else "")
                print(f"[{c.index}] {c.document} {where} ({c.score:.4f}): {c.snippet}")
            if reply.note:
                print(f"note: {reply.note}", file=sys.stderr)
            return unanswerable(reply)
        except (ServiceError, IngestError) as exc:
            return _fail(error_body(exc)[1].error.message)
        finally:
            await chat.engines.aclose()

    return asyncio.run(run())


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .app import create_app

    extra: dict[str, Any] = {"host": args.host, "port": args.port, "upstream_url": args.upstream_url}
    if args.no_ui:
        extra["ui"] = False
    settings = _settings(args, **extra)
    ingest = ingest_settings_for(settings, collection=args.collection, chroma_url=args.chroma_url)
    from ingest.errors import StoreError
    from ingest.store import check_writable

    try:  # the store, uploads, keys and converted models all live there: refuse now, not on the first request
        check_writable(ingest)
    except StoreError as exc:
        return _fail(str(exc))
    app = create_app(settings, ingest_settings=ingest)
    from .logs import configure_logging

    configure_logging(settings.log_format, settings.log_level)
    where = f"http://{settings.host}:{settings.port}"
    page = f", chat page: {where}/ui" if settings.ui else ""
    print(f"kongming on {where}  (OpenAI API: {where}/v1{page})", file=sys.stderr)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")
    return 0


