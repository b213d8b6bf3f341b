"""The 甄嬛 persona trained through the API on a real base: huanhuan.json (Alpaca) -> /v1/files -> a chat job on
gemma-3-270m with the persona's system prompt -> its evaluation (val loss, BLEU, ROUGE-L, style) -> chat with it.

`kongming serve` runs in its own process (with its worker), as in bench/waimai_job.py. `--pairs` and `--epochs` bound
the CPU budget; the LoRA is the 诸葛亮 adapter's (r 16, alpha 32, all projections), so the shipped adapters match in
size. Export the run afterwards with `finetune export <run> --out models/zhen-huan-gemma270m`.

    # the shipped run (38 steps, ~32 min on a loaded 2-core CPU):
    OMP_NUM_THREADS=1 nice -n 10 python bench/persona_job.py --out bench/results/persona_job_cpu.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import write_result
from bench.job_bench import ROOT, SHARED, knowledge_base, start_service

SYSTEM = "你是甄嬛，大理寺少卿甄远道之女，后来的熹贵妃。请以甄嬛的身份和口吻回答。"  # ZHEN_HUAN.system_prompt
STYLE = {"self_address": ["本宫", "臣妾", "嫔妾", "我"], "address": ["皇上", "娘娘", "小主", "姐姐", "妹妹"],
         "particles": ["罢", "呢", "么", "便是"]}  # fmt: skip
PROMPTS = ["娘娘，近来可好？", "皇上驾到！", "小主，华妃娘娘派人送了东西来。"]


def job_options(pairs: int, samples: int) -> dict[str, Any]:
    lora = {"r": 16, "alpha": 32, "dropout": 0.05,
            "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}
    return {"task": "chat", "lora": lora,
            "data": {"val_split": 0.05, "split_seed": 42, "system": SYSTEM,
                     **({"max_examples": pairs} if pairs else {})},
            "train": {"max_seq_len": 128, "eval_every": 50, "save_every": 25, "val_max_examples": 60},
            "eval": {"max_samples": samples, "max_new_tokens": 48, "compare_base": True, "style": STYLE}}  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", type=int, default=360, help="training pairs (the first of the 95%% kept; 0: all)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr-multiplier", type=float, default=1.5, help="of 2e-4")
    p.add_argument("--samples", type=int, default=24, help="held-out prompts generated for the evaluation")
    p.add_argument("--work", type=Path, default=ROOT / "data" / "job_bench", help="data folder of the run")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    import openai

    args.work.mkdir(parents=True, exist_ok=True)
    os.environ["KONGMING_DATA_DIR"] = str(args.work)
    knowledge_base(args.work)
    proc, url = start_service(args.work, "gemma-3-270m")
    start = time.time()
    try:
        client = openai.OpenAI(base_url=url, api_key="bench-key", max_retries=0, timeout=600)
        upload = client.files.create(file=(SHARED / "persona" / "huanhuan.json").open("rb"), purpose="fine-tune")
        job = client.fine_tuning.jobs.create(
            model="gemma-3-270m", training_file=upload.id, suffix="zhen-huan", seed=42,
            hyperparameters={"n_epochs": args.epochs, "batch_size": 8, "learning_rate_multiplier": args.lr_multiplier},
            extra_body={"kongming": job_options(args.pairs, args.samples)})  # fmt: skip
        print(job.id, flush=True)
        while (job := client.fine_tuning.jobs.retrieve(job.id)).status not in ("succeeded", "failed", "cancelled"):
            time.sleep(30)
        events = list(client.fine_tuning.jobs.list_events(job.id, limit=10))
        evaluation = next((e for e in events if e.message.startswith("Evaluation:")), None)
        answers = []
        if job.status == "succeeded":
            for prompt in PROMPTS:
                r = client.chat.completions.create(model=job.fine_tuned_model or "", max_tokens=48,
                                                   messages=[{"role": "user", "content": prompt}])  # fmt: skip
                answers.append({"prompt": prompt, "answer": r.choices[0].message.content})
    finally:
        proc.terminate()
        proc.wait(60)
    out = {"job": job.id, "status": job.status, "model": job.fine_tuned_model, "trained_tokens": job.trained_tokens,
           "wall_seconds": round(time.time() - start), "pairs": args.pairs, "epochs": args.epochs,
           "upload": upload.status_details, "evaluation": evaluation.message if evaluation else None,
           "report": evaluation.data if evaluation else None, "error": job.error, "chat": answers}  # fmt: skip
    write_result(out, args.out)
    return 0 if job.status == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
