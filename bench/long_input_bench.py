"""Benchmark: rag-route latency for long pasted messages (a text, then a question at its end) through the real app —
1k, 15k and 100k characters, routed (`kongming`) and forced (`kongming-rag`). Retrieval and routing read only the
question part (service/answer/rag.py question_part), so the time should not grow with the paste.

    KONGMING_DATA_DIR=/work/scratch/data KONGMING_COLLECTION=sanguo \
        python bench/long_input_bench.py --text ../shared/data/corpus/sanguo_yanyi.txt --rounds 5 \
        --out bench/results/long_input.json
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import summary, write_result

QUESTIONS = ["以上文字中，刘备、关羽、张飞在什么地方结拜为兄弟？", "以上文字中，孙坚在哪座山中了埋伏而死？",
             "Where did Liu Bei, Guan Yu and Zhang Fei swear brotherhood?"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--text", type=Path, required=True, help="a long text to paste from (UTF-8)")
    p.add_argument("--sizes", default="1000,15000,100000", help="message lengths in characters")
    p.add_argument("--rounds", type=int, default=5, help="requests per size, model and question")
    p.add_argument("--out", type=Path)
    args = p.parse_args()

    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import get_service_settings

    text = args.text.read_text(encoding="utf-8")
    client = TestClient(create_app(get_service_settings(), ui=False))
    client.__enter__()
    # warm-up turns: the embedder, the keyword index and the router's examples load on first use, not per request
    for model in ("kongming-rag", "kongming"):
        client.post("/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": "赤壁"}]})
    results = []
    for size in (int(s) for s in args.sizes.split(",")):
        for model in ("kongming", "kongming-rag"):
            times: list[float] = []
            routes: set[str] = set()
            statuses: set[int] = set()
            for r in range(args.rounds):
                for n, q in enumerate(QUESTIONS):
                    start = (r * 7919 + n * 104729) % max(1, len(text) - size)
                    body = text[start : start + size - len(q) - 2] + "\n\n" + q
                    t0 = time.perf_counter()
                    resp = client.post("/v1/chat/completions",
                                       json={"model": model, "messages": [{"role": "user", "content": body}]})
                    times.append((time.perf_counter() - t0) * 1000)
                    statuses.add(resp.status_code)
                    if resp.status_code == 200:
                        routes.add(str((resp.json().get("kongming") or {}).get("route", {}).get("route", "?")))
            results.append({"chars": size, "model": model, "status": sorted(statuses), "routes": sorted(routes),
                            **summary(times)})
            print(results[-1], file=sys.stderr)
    client.__exit__(None, None, None)
    write_result({
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, Python {platform.python_version()}",
        "command": " ".join(sys.argv),
        "results": results,
    }, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
