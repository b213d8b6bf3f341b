"""Benchmark: whole-pipeline ingest throughput vs the raw embedder on the same chunks, unchanged
re-ingest time, and peak memory of ingest.

    python bench/ingest_bench.py --corpus ../shared/data/corpus/sanguo_yanyi.txt --data-dir /tmp/kb-bench

The store it leaves behind is what bench/query_bench.py and `kongming eval retrieval` read.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
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
    args = p.parse_args()
    if not args.corpus.is_file():
        print(f"corpus not found: {args.corpus} (needs ../shared/data)", file=sys.stderr)
        return 2

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


if __name__ == "__main__":
    sys.exit(main())
