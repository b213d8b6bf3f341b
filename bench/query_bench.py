"""Benchmark: query latency (model loaded, whole novel indexed) for hybrid, dense and keyword retrieval,
against the bare embedder + Chroma query as the floor, and the peak memory of the serving process.

    python bench/query_bench.py --data-dir /tmp/kongming-bench --out bench/results/query_sanguo.json

`--bm25-baseline FILE` instead compares the keyword index's BM25 with another implementation of the same class
(e.g. the hand-written one: `git show 0e4ae38:ingest/keyword.py > /tmp/keyword_handwritten.py`) on the same
chunks, tokens and alias groups of the corpus, with no store and no embedding: build time, query time, the
largest score difference and keyword-only hit@k on the dev set.
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
    p.add_argument("--bm25-baseline", type=Path, help="a keyword.py whose BM25 to compare with the current one")
    p.add_argument("--corpus", type=Path, default=Path("../shared/data/corpus/sanguo_yanyi.txt"))
    args = p.parse_args()
    if args.bm25_baseline:
        write_result(compare_bm25(args.bm25_baseline, args.corpus, args.questions, args.rounds), args.out)
        return 0

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


def compare_bm25(baseline: Path, corpus: Path, questions: Path, rounds: int) -> dict[str, object]:
    import importlib.util
    import pickle

    import numpy as np

    from ingest import keyword
    from ingest.aliases import AliasTable, mine_aliases
    from ingest.chunking import chunk_document
    from ingest.evaluation import first_hit, load_questions
    from ingest.loaders import load_file
    from ingest.retrieval import RetrievedChunk, keyword_query

    spec = importlib.util.spec_from_file_location("ingest.keyword_baseline", baseline)
    assert spec and spec.loader
    other = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(other)
    (doc,), _ = load_file(corpus)
    chunks = chunk_document(doc.text)  # the default 480/60 chunks
    tokens = [keyword.tokenize(c.text) for c in chunks]
    ids = [str(i) for i in range(len(chunks))]
    aliases = AliasTable(mine_aliases(doc.text))
    qs = load_questions(questions)
    queries = [keyword_query(q.question, aliases, "ngram") for q in qs]
    out: dict[str, object] = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "chunks": len(chunks),
        "queries": len(qs) * rounds,
    }
    scores = {}
    for name, cls in (("handwritten", other.BM25), ("current", keyword.BM25)):
        builds = []
        for _ in range(rounds):
            t = time.perf_counter()
            index = cls(ids, tokens)
            builds.append(time.perf_counter() - t)
        saved = pickle.dumps(index, protocol=pickle.HIGHEST_PROTOCOL)  # as the keyword index stores it
        loads = []
        for _ in range(rounds):
            t = time.perf_counter()
            pickle.loads(saved)
            loads.append(time.perf_counter() - t)
        lat = []
        for _ in range(rounds):
            for toks, groups in queries:
                t = time.perf_counter()
                index.scores(toks, groups)
                lat.append((time.perf_counter() - t) * 1000)
        scores[name] = [index.scores(toks, groups) for toks, groups in queries]
        ranks = []
        for q, s in zip(qs, scores[name], strict=True):
            top = np.argsort(-s, kind="stable")[:10]
            hits = [RetrievedChunk(ids[i], chunks[i].text, {"chapter": chunks[i].chapter}, float(s[i])) for i in top]
            if q.gradable:
                ranks.append(first_hit(q, [h for h in hits if h.score > 0]))
        n = len(ranks)
        out[name] = {
            "build_s_min": round(min(builds), 3),
            "pickle_mib": round(len(saved) / 2**20, 2),
            "load_s_min": round(min(loads), 3),
            "query_p50_ms": round(statistics.median(lat), 3),
            "query_p95_ms": round(pct(lat, 0.95), 3),
            **{f"hit@{c}": round(sum(1 for r in ranks if r and r <= c) / n, 4) for c in (1, 3, 5, 10)},
            "mrr@10": round(sum(1 / r for r in ranks if r and r <= 10) / n, 4),
        }
        print(name, out[name], flush=True)
    diffs = [float(np.abs(a - b).max()) for a, b in zip(scores["handwritten"], scores["current"], strict=True)]
    out["max_abs_score_difference"] = max(diffs)
    return out


if __name__ == "__main__":
    sys.exit(main())
