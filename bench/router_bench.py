"""Benchmark: router decision latency and accuracy on the labelled dev set, as the service runs the router.

    python bench/router_bench.py --data-dir data --out bench/results/router_$(date +%F).json

Per message, as `ChatService.reply` does it: the query embedding is computed once (retrieval needs it anyway) and
handed to `Router.decide`; the decision time excludes that embedding, which is timed and reported on its own.
A short follow-up ("接着讲") is searched together with the previous question, so for it the router embeds the last
message itself: those decisions include an embedding and are also reported apart. Timed after a warm-up pass
(model loaded, example matrix embedded), `--rounds` passes over the set. A breakdown times the router's parts
(text signals, keyword top score, names, nearest examples) on the same messages.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
from common import pct, summary, write_result

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def timed(fn: Any, *args: Any) -> tuple[Any, float]:
    t = time.perf_counter()
    out = fn(*args)
    return out, (time.perf_counter() - t) * 1000


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=Path("data"))
    p.add_argument("--collection", help="knowledge base (default: KONGMING_COLLECTION or 'default')")
    p.add_argument("--messages", type=Path, default=Path("eval/route_dev.jsonl"))
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", type=Path)
    args = p.parse_args()

    from service.answer.chat import _retrieval_query, load_router
    from service.answer.retrieval import KnowledgeBase
    from service.answer.router import conversation_features, knn_features
    from service.answer.router_fit import evaluate_router, load_messages
    from service.settings import get_service_settings, ingest_settings_for

    t0 = time.perf_counter()
    settings = get_service_settings(data_dir=args.data_dir)
    kb = KnowledgeBase(ingest_settings_for(settings, collection=args.collection))
    if not kb.available():
        print(f"error: {kb.error}", file=sys.stderr)
        return 1
    router = load_router(settings, kb)
    router.example_matrix()
    startup_s = time.perf_counter() - t0
    retriever = kb.retriever
    items = load_messages(args.messages)

    cases = []
    for item in items:
        users = [m["content"] for m in item.messages if m["role"] == "user"]
        query = _retrieval_query(users)
        cases.append((item, query, query == users[-1]))

    def one(item: Any, query: str, reuse: bool) -> tuple[Any, float, float]:
        emb, embed_ms = timed(retriever.embed_query, query)
        decision, decide_ms = timed(router.decide, item.messages, emb if reuse else None)
        return decision, embed_ms, decide_ms

    for case in cases:  # warm-up
        one(*case)
    embed_ms: list[float] = []
    decide_reused: list[float] = []
    decide_self_embed: list[float] = []
    routes: dict[str, str] = {}
    for _ in range(args.rounds):
        for item, query, reuse in cases:
            decision, e_ms, d_ms = one(item, query, reuse)
            embed_ms.append(e_ms)
            (decide_reused if reuse else decide_self_embed).append(d_ms)
            routes[item.id] = decision.route
    decide_all = decide_reused + decide_self_embed

    # where the decision time goes, on the messages that reuse the embedding
    parts: dict[str, list[float]] = {"text_signals_total": [], "keyword_top": [], "kb_names_scan": [],
                                     "nearest_examples": [], "rest": []}
    entities = kb.entities()
    examples, labels = router.example_matrix(), router._labels
    for item, query, reuse in cases:
        if not reuse:
            continue
        emb = retriever.embed_query(query)
        last = item.messages[-1]["content"]
        _, total_ms = timed(router.decide, item.messages, emb)
        _, f_ms = timed(conversation_features, item.messages, router.signals)
        _, kw_ms = timed(retriever.keyword_top, last)
        lowered = last.lower()
        _, names_ms = timed(lambda low=lowered: [n for n in entities if n.lower() in low])
        _, knn_ms = timed(knn_features, np.asarray(emb, np.float32), examples, labels)
        parts["text_signals_total"].append(f_ms)
        parts["keyword_top"].append(kw_ms)
        parts["kb_names_scan"].append(names_ms)
        parts["nearest_examples"].append(knn_ms)
        parts["rest"].append(max(total_ms - f_ms - knn_ms, 0.0))

    graded = [(c[0].route, routes[c[0].id]) for c in cases if c[0].route]
    correct = sum(g == r for g, r in graded)
    report, _ = evaluate_router(router, items)  # what `kongming eval route` computes, for the cross-check
    out: dict[str, Any] = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "command": "python " + " ".join(sys.argv),
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
        "messages": len(cases),
        "follow_ups_embedding_in_router": sum(1 for c in cases if not c[2]),
        "rounds": args.rounds,
        "startup_seconds": round(startup_s, 2),
        "kb_names": len(entities),
        "router_examples": int(examples.shape[0]),
        "decide_excluding_query_embedding": summary(decide_reused),
        "decide_follow_ups_with_own_embedding": summary(decide_self_embed),
        "decide_all_messages": summary(decide_all),
        "query_embedding": summary(embed_ms),
        "breakdown_ms_p50": {k: round(statistics.median(v), 3) for k, v in parts.items()},
        "breakdown_ms_p95": {k: round(pct(v, 0.95), 3) for k, v in parts.items()},
        "target_p95_ms": 15.0,
        "accuracy": round(correct / len(graded), 4) if graded else None,
        "routes_predicted": dict(Counter(routes.values())),
        "eval_route_summary": report.summary(),
    }
    d = out["decide_excluding_query_embedding"]
    print(f"\nrouter decide (embedding reused, {d['n']} decisions): p50 {d['p50_ms']} ms, p95 {d['p95_ms']} ms "
          f"(target <= 15); all messages p95 {out['decide_all_messages']['p95_ms']} ms; query embedding p50 "
          f"{out['query_embedding']['p50_ms']} ms, p95 {out['query_embedding']['p95_ms']} ms; accuracy "
          f"{out['accuracy']} on {len(graded)} labelled messages", file=sys.stderr)
    write_result(out, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
