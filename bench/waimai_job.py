"""The waimai walkthrough through the API on a real base: reviews -> /v1/files -> a classify job -> its evaluation
(accuracy and macro F1 against the majority class and TF-IDF on the same held-out rows) -> chat with the tuned model.

`kongming serve` runs in its own process (with its worker); waimai_10k.csv is converted to messages JSONL with the
system prompt 你是一位外卖评论好评差评评论专家。 and split 70/30 with seed 100 by the job; `--steps` bounds the CPU
budget (0: `--epochs` whole epochs, ~384 steps each). On a CUDA host the job trains there (device auto, bf16 where
supported) with the same command.

    python bench/waimai_job.py --steps 80 --out bench/results/waimai_job_eval_cpu.json
    python bench/waimai_job.py --steps 0 --epochs 2 --out bench/results/waimai_job_gpu.json   # the GPU run
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import write_result
from bench.job_bench import ROOT, SHARED, SYSTEM, knowledge_base, start_service

FINETUNE = "import sys; from finetune.cli import main; sys.exit(main())"


def job_options(steps: int, samples: int) -> dict[str, Any]:
    train = {"max_seq_len": 128, "eval_every": 40, "save_every": 40, "val_max_examples": 100}
    return {"task": "classify", "data": {"val_split": 0.3, "split_seed": 100, "dedupe": False},
            "train": {**train, **({"max_steps": steps} if steps else {})},
            "eval": {"max_samples": samples, "compare_base": False}}  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=80, help="optimizer steps (batch 8 packed rows of 128 tokens)")
    p.add_argument("--epochs", type=int, default=1, help="passes over the 8,337 training rows (with --steps 0)")
    p.add_argument("--samples", type=int, default=600, help="held-out rows scored")
    p.add_argument("--work", type=Path, default=ROOT / "data" / "job_bench", help="data folder of the run")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    import openai

    args.work.mkdir(parents=True, exist_ok=True)
    os.environ["KONGMING_DATA_DIR"] = str(args.work)
    data = args.work / "waimai.jsonl"
    subprocess.run([sys.executable, "-c", FINETUNE, "data", "convert", str(SHARED / "classify" / "waimai_10k.csv"),
                    "--from", "csv", "--labels", "0=差评,1=好评", "--system", SYSTEM, "--to", "openai",
                    "--out", str(data)], check=True)  # fmt: skip
    knowledge_base(args.work)
    proc, url = start_service(args.work, "gemma-3-270m")
    start = time.time()
    try:
        client = openai.OpenAI(base_url=url, api_key="bench-key", max_retries=0, timeout=600)
        upload = client.files.create(file=data.open("rb"), purpose="fine-tune")
        options = job_options(args.steps, args.samples)
        job = client.fine_tuning.jobs.create(model="gemma-3-270m", training_file=upload.id, suffix="waimai", seed=100,
                                             hyperparameters={"n_epochs": args.epochs, "batch_size": 8},
                                             extra_body={"kongming": options})  # fmt: skip
        while (job := client.fine_tuning.jobs.retrieve(job.id)).status not in ("succeeded", "failed", "cancelled"):
            time.sleep(15)
        events = list(client.fine_tuning.jobs.list_events(job.id, limit=10))
        evaluation = next((e for e in events if e.message.startswith("Evaluation:")), None)
        held = [json.loads(line) for line in data.read_text(encoding="utf-8").splitlines()[-3:]]
        answers = []
        if job.status == "succeeded":
            for rec in held:
                r = client.chat.completions.create(model=job.fine_tuned_model or "", messages=rec["messages"][:2],
                                                   max_tokens=4)  # fmt: skip
                answers.append({"review": rec["messages"][1]["content"], "gold": rec["messages"][2]["content"],
                                "answer": r.choices[0].message.content})  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(60)
    out = {"job": job.id, "status": job.status, "model": job.fine_tuned_model, "trained_tokens": job.trained_tokens,
           "wall_seconds": round(time.time() - start), "steps": args.steps,
           "evaluation": evaluation.message if evaluation else None, "report": evaluation.data if evaluation else None,
           "chat": answers}  # fmt: skip
    write_result(out, args.out)
    return 0 if job.status == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
