"""Benchmark: whole-pipeline ingest throughput vs the raw embedder on the same chunks, unchanged
re-ingest time, and peak memory of ingest.

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

    settings = get_settings(data_dir=args.data_dir)
    (doc,), _ = load_file(args.corpus)
    chunks = chunk_document(doc.text, settings.chunk_size, settings.chunk_overlap)
    step = max(1, len(chunks) // args.sample)
    sample = [c.text for c in chunks[::step]][: args.sample]
    emb = get_embedder(settings.embed_model)
    emb.embed_passages(sample[:4])  # warm-up
    t0 = time.perf_counter()
    for lo in range(0, len(sample), settings.embed_batch_size):
        emb.embed_passages(sample[lo : lo + settings.embed_batch_size])
    raw_s = time.perf_counter() - t0
    raw_cps = sum(map(len, sample)) / raw_s
    total_chars = sum(len(c.text) for c in chunks)

    env = {**os.environ, "KONGMING_DATA_DIR": str(args.data_dir), "KONGMING_COLLECTION": args.collection}
    cmd = [sys.executable, "-m", "ingest.cli", "add", str(args.corpus), "--no-progress"]
    subprocess.run([sys.executable, "-m", "ingest.cli", "remove", str(args.corpus)], env=env, capture_output=True)
    t0 = time.perf_counter()
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    first_s = time.perf_counter() - t0
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    again_s = time.perf_counter() - t0
    pipe_cps = total_chars / first_s
    result = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "corpus": str(args.corpus),
        "chunks": len(chunks),
        "chunk_chars": total_chars,
        "raw_embedder_chars_per_s": round(raw_cps, 1),
        "raw_sample_chunks": len(sample),
        "pipeline_seconds": round(first_s, 1),
        "pipeline_chars_per_s": round(pipe_cps, 1),
        "pipeline_vs_raw": round(pipe_cps / raw_cps, 3),
        "reingest_unchanged_seconds": round(again_s, 2),
        "reingest_vs_first": round(again_s / first_s, 4),
        "ingest_peak_rss_mib": round(peak_kib / 1024, 1),
        "first_summary": first.stdout.strip(),
        "again_summary": again.stdout.strip(),
    }
    write_result(result, args.out)
    return 0


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
