"""Benchmark: query latency (model loaded, whole novel indexed) for hybrid, dense and keyword retrieval,
against the bare embedder + Chroma query as the floor, and the peak memory of the serving process.

    python bench/query_bench.py --data-dir /tmp/kongming-bench --out bench/results/query_sanguo.json
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import time
from datetime import date
from pathlib import Path

from common import pct, write_result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=Path("/tmp/kongming-bench"))
    p.add_argument("--collection", default="sanguo")
    p.add_argument("--questions", type=Path, default=Path("eval/sanguo_dev.jsonl"))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("-k", type=int, default=5)
    p.add_argument("--out", type=Path)
    args = p.parse_args()

    from ingest.evaluation import load_questions
    from ingest.retrieval import Retriever
    from ingest.settings import get_settings

    t0 = time.perf_counter()
    r = Retriever(get_settings(data_dir=args.data_dir, collection=args.collection))
    r.retrieve("热身", args.k)
    load_s = time.perf_counter() - t0
    qs = [q.question for q in load_questions(args.questions)]
    out: dict[str, object] = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "chunks": r.store.count(),
        "queries": len(qs) * args.rounds,
        "startup_seconds": round(load_s, 2),
    }

    def floor(q: str) -> None:  # the bare minimum a dense query costs: embed + Chroma nearest neighbours
        emb = r.embedder.embed_queries([q])[0]
        r.store.chunks.query(query_embeddings=[emb.tolist()], n_results=args.k)

    cases = {
        "floor_embed_plus_chroma": floor,
        "dense": lambda q: r.retrieve(q, args.k, mode="dense"),
        "keyword": lambda q: r.retrieve(q, args.k, mode="keyword"),
        "hybrid": lambda q: r.retrieve(q, args.k, mode="hybrid"),
    }
    for name, fn in cases.items():
        lat = []
        for _ in range(args.rounds):
            for q in qs:
                t = time.perf_counter()
                fn(q)
                lat.append((time.perf_counter() - t) * 1000)
        out[name] = {
            "p50_ms": round(statistics.median(lat), 2),
            "p95_ms": round(pct(lat, 0.95), 2),
            "p99_ms": round(pct(lat, 0.99), 2),
        }
        print(name, out[name], flush=True)
    hybrid, fl = out["hybrid"], out["floor_embed_plus_chroma"]
    out["hybrid_p50_vs_floor"] = round(hybrid["p50_ms"] / fl["p50_ms"], 2)  # type: ignore[index]
    out["serving_peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    write_result(out, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
