"""Benchmark: a fine-tuning job through the API against `finetune train` run directly on the same config, and chat
latency on the rag route while a job trains against idle, in one run.

The real deployment shape: `kongming serve` in its own process (it starts its worker process, which runs
`finetune train` then `finetune eval`), a knowledge base of the first chapters of 三国演义, reviews from
waimai_10k.csv as messages JSONL uploaded through /v1/files. In order:

1. idle: `--requests` rag chat requests, one at a time (latency per request);
2. `--rounds` times: a job with nothing else running, then `finetune train` on that job's own job.yaml (another
   output_dir): training tokens/s of each (real tokens over the steps after `--warmup`, from metrics.jsonl);
   the ratio is median job / median direct;
3. the same job again, with rag chat requests sent one at a time for as long as it trains: their latency.

Every process gets `--threads` BLAS/OpenMP threads (OMP_NUM_THREADS): on a small shared machine two threads per
training make each step hostage to any other process, and one core is left for the service.

    python bench/job_bench.py --base gemma-3-270m --steps 12 --out bench/results/job_bench_cpu.json
    python bench/job_bench.py --base /path/to/hf-model      # any local folder (it becomes the base `bench`)
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import summary, write_result

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
SYSTEM = "你是一位外卖评论好评差评评论专家。"
QUESTIONS = ["桃园结义的是哪三个人？", "刘备字什么？", "张飞是哪里人？", "黄巾起义的首领是谁？", "关羽用什么兵器？",
             "董卓是怎么进京的？", "吕布杀了谁？", "曹操为什么要刺杀董卓？"]  # fmt: skip


def reviews(path: Path, per_label: int) -> Path:
    rows: dict[str, list[str]] = {"0": [], "1": []}
    with (SHARED / "classify" / "waimai_10k.csv").open(encoding="utf-8-sig", newline="") as f:
        for row in csv.DictReader(f):
            if len(rows[row["label"]]) < per_label:
                rows[row["label"]].append(row["review"])
    names = {"0": "差评", "1": "好评"}
    with path.open("w", encoding="utf-8") as out:
        for label, texts in rows.items():
            for text in texts:
                msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text},
                        {"role": "assistant", "content": names[label]}]  # fmt: skip
                out.write(json.dumps({"messages": msgs}, ensure_ascii=False) + "\n")
    return path


def knowledge_base(work: Path) -> None:
    """The first ~40 kB of 三国演义 in the collection `bench` (once)."""
    from ingest import pipeline
    from ingest.settings import get_settings

    docs = work / "docs"
    if (docs / "sanguo_head.txt").is_file():
        return
    docs.mkdir(parents=True, exist_ok=True)
    text = (SHARED / "corpus" / "sanguo_yanyi.txt").read_text(encoding="utf-8")[:40_000]
    (docs / "sanguo_head.txt").write_text(text, encoding="utf-8")
    pipeline.add_paths([docs / "sanguo_head.txt"], get_settings(data_dir=work, collection="bench"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_service(work: Path, base: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    bases = {} if base == "gemma-3-270m" else {"bench": base}
    env = {**os.environ, "KONGMING_DATA_DIR": str(work), "KONGMING_API_KEYS": '["bench-key"]',
           "KONGMING_FINETUNE_BASES": json.dumps(bases), "KONGMING_UI": "false", "KONGMING_COLLECTION": "bench",
           "KONGMING_PORT": str(port), "KONGMING_LOG_LEVEL": "WARNING"}  # fmt: skip
    log = (work / "service.log").open("ab")
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve"], env=env, stdout=log, stderr=log)
    import httpx

    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url + "/v1"
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.terminate()
    raise SystemExit(f"the service did not start: see {work / 'service.log'}")


def ask(client: Any, i: int) -> float:
    start = time.perf_counter()
    client.chat.completions.create(model="kongming-rag", messages=[{"role": "user", "content": QUESTIONS[i % 8]}])
    return (time.perf_counter() - start) * 1000


def tokens_per_s(run_dir: Path, warmup: int) -> dict[str, float]:
    steps = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    steps = [r for r in steps if "loss" in r and r["step"] > warmup]
    tokens, seconds = sum(r["tokens"] for r in steps), sum(r["seconds"] for r in steps)
    rate = round(tokens / seconds, 1)
    return {"steps": len(steps), "tokens": tokens, "seconds": round(seconds, 2), "tokens_per_s": rate}


def run_job(client: Any, args: argparse.Namespace, file_id: str, chat: bool) -> tuple[Any, list[float]]:
    model = "gemma-3-270m" if args.base == "gemma-3-270m" else "bench"
    ext = {"lora": {"r": 8, "alpha": 16, "dropout": 0.05},
           "train": {"max_steps": args.steps, "max_seq_len": 128, "eval_every": 0, "save_every": 0,
                     "device": "cpu"},
           "eval": {"max_samples": 4, "max_new_tokens": 4, "compare_base": False}}  # fmt: skip
    job = client.fine_tuning.jobs.create(model=model, training_file=file_id, seed=1, extra_body={"kongming": ext},
                                         hyperparameters={"batch_size": 4, "n_epochs": 1})  # fmt: skip
    latencies: list[float] = []
    i = 0
    while (job := client.fine_tuning.jobs.retrieve(job.id)).status not in ("succeeded", "failed", "cancelled"):
        steps = [e for e in client.fine_tuning.jobs.list_events(job.id, limit=5) if "train_loss" in (e.data or {})]
        training = job.status == "running" and steps and steps[0].data["step"] < args.steps
        if chat and training:
            latencies.append(ask(client, i))
            i += 1
        else:
            time.sleep(0.5)
    if job.status != "succeeded":
        raise SystemExit(f"job {job.id} {job.status}: {job.error}")
    return job, latencies


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", default="gemma-3-270m", help="gemma-3-270m or a local HF model folder")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=2, help="steps left out of tokens/s")
    p.add_argument("--per-label", type=int, default=60, help="reviews of each label in the training file")
    p.add_argument("--requests", type=int, default=40, help="idle rag requests")
    p.add_argument("--work", type=Path, default=ROOT / "data" / "job_bench", help="data folder of the run")
    p.add_argument("--rounds", type=int, default=2, help="job / direct pairs for tokens/s")
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the service, worker and training")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    import openai

    args.work.mkdir(parents=True, exist_ok=True)
    os.environ["KONGMING_DATA_DIR"] = str(args.work)
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)
    knowledge_base(args.work)
    proc, url = start_service(args.work, args.base)
    try:
        client = openai.OpenAI(base_url=url, api_key="bench-key", max_retries=0, timeout=600)
        ask(client, 0)  # first request loads the embedder
        idle = [ask(client, i) for i in range(args.requests)]
        upload = client.files.create(file=reviews(args.work / "reviews.jsonl", args.per_label).open("rb"),
                                     purpose="fine-tune")  # fmt: skip
        jobs, directs = [], []
        for r in range(args.rounds):
            job, _ = run_job(client, args, upload.id, chat=False)
            job_dir = args.work / "finetune" / "jobs" / job.id
            jobs.append(tokens_per_s(job_dir / "run", args.warmup))
            direct_dir = args.work / f"direct_run_{r}"
            shutil.rmtree(direct_dir, ignore_errors=True)
            subprocess.run([sys.executable, "-c", "import sys; from finetune.cli import main; sys.exit(main())",
                            "train", str(job_dir / "job.yaml"), f"output_dir={direct_dir}"], check=True,
                           cwd=job_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
            directs.append(tokens_per_s(direct_dir, args.warmup))
        busy_job, busy = run_job(client, args, upload.id, chat=True)
    finally:
        proc.terminate()
        proc.wait(60)
    job_rate = statistics.median(j["tokens_per_s"] for j in jobs)
    direct_rate = statistics.median(d["tokens_per_s"] for d in directs)
    out = {
        "date": date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "base": args.base,
        "steps": args.steps, "warmup": args.warmup, "threads": args.threads,
        "job_tokens_per_s": jobs, "direct_tokens_per_s": directs,
        "job_vs_direct": round(job_rate / direct_rate, 3),
        "busy_job_tokens_per_s": tokens_per_s(args.work / "finetune" / "jobs" / busy_job.id / "run", args.warmup),
        "rag_latency_idle": summary(idle), "rag_latency_while_training": summary(busy),
    }  # fmt: skip
    write_result(out, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
