"""Benchmark: the persona as served. Held-out persona prompts answered through the service's own engine (the shipped
adapter on gemma-3-270m, in process) with the persona's decoding, or with none (`--no-controls`: the decoding before
issue 12); loop rate, style of the answer's own words, ROUGE-L, length, latency. `--both`: `both` turns on dev
questions through ChatService (answer keyword, citations), the default extractive framing or the persona model
reading the passages (`--generate`).

    python bench/persona_bench.py --n 20 --temperature 0.7 --out bench/results/persona_decoding.json
    python bench/persona_bench.py --n 20 --temperature 0.7 --no-controls --out bench/results/persona_before.json
    KONGMING_DATA_DIR=/tmp/data KONGMING_COLLECTION=sanguo python bench/persona_bench.py --both eval/sanguo_dev.jsonl \
        --n 40 --out bench/results/persona_both.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import re
import statistics
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
ADAPTER = REPO / "models" / "zhuge-liang-gemma270m"


def held_out(path: Path, n: int) -> list[dict[str, str]]:
    """The adapter's held-out pairs (prompt, reference): `finetune eval`'s samples of the run's validation split."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [{"prompt": r["prompt"], "reference": r["reference"]} for r in rows][: n or None]


def persona_config(no_controls: bool, overrides: list[str] | None = None) -> Any:
    """The shipped 诸葛亮 persona; `overrides` ("no_repeat_ngram_size=0", "repetition_penalty=1.2", "stop=[]": JSON
    values) change its decoding."""
    from service.settings import ZHUGE_LIANG

    if not no_controls:
        changes = {k: json.loads(v) for k, v in (o.split("=", 1) for o in overrides or [])}
        return ZHUGE_LIANG.model_validate({**ZHUGE_LIANG.model_dump(), **changes})
    # the persona as it was served before issue 12: no repetition controls, no stop, 160 tokens
    return ZHUGE_LIANG.model_copy(update={"repetition_penalty": None, "frequency_penalty": None,
                                          "no_repeat_ngram_size": 0, "stop": [], "max_tokens": 160,
                                          "keep_script": False})


async def persona_run(args: argparse.Namespace) -> dict[str, Any]:
    import yaml

    from finetune.evaluation.textmetrics import loop_rate, own_words, repeated, rouge_l, style_score
    from service.answer.persona import Engines, persona_messages, persona_params
    from service.engines import SamplingParams
    from service.settings import get_service_settings

    persona = persona_config(args.no_controls, args.set)
    engines = Engines(get_service_settings(data_dir=args.data_dir))
    engine = await engines.persona(persona)
    rows = held_out(args.samples, args.n)
    style = yaml.safe_load((ADAPTER / "config.yaml").read_text(encoding="utf-8"))["eval"]["style"]
    answers, seconds, finishes = [], [], []
    for i, row in enumerate(rows):
        messages = persona_messages(persona, [{"role": "user", "content": row["prompt"]}])
        params = persona_params(persona, SamplingParams(max_tokens=persona.max_tokens, temperature=args.temperature,
                                                        seed=i))
        started = time.perf_counter()
        done = await engine.generate(messages, params)
        seconds.append(time.perf_counter() - started)
        answers.append(done.text.strip())
        finishes.append(done.finish_reason)
        print(f"{i + 1}/{len(rows)} {seconds[-1]:.1f}s {done.finish_reason} {repeated(answers[-1])} | "
              f"{answers[-1][:80]}", file=sys.stderr, flush=True)
    await engines.aclose()
    refs = [r["reference"] for r in rows]
    own = [own_words(a, [persona.system_prompt, r["prompt"]]) for a, r in zip(answers, rows, strict=True)]
    return {
        "persona": persona.name,
        "decoding": {"temperature": args.temperature, "max_tokens": persona.max_tokens,
                     "repetition_penalty": persona.repetition_penalty,
                     "frequency_penalty": persona.frequency_penalty,
                     "no_repeat_ngram_size": persona.no_repeat_ngram_size, "stop": persona.stop,
                     "keep_script": persona.keep_script},
        "prompts": len(rows),
        "loop_rate": round(loop_rate(answers), 4),
        "latin_rate": round(sum(bool(re.search(r"[A-Za-z]+", a)) for a in answers) / max(len(answers), 1), 4),
        "style_own_words": style_score(own, style)["score"],
        "rouge_l": round(rouge_l(answers, refs), 4),
        "mean_chars": round(sum(map(len, answers)) / max(len(answers), 1), 1),
        "finish_length": finishes.count("length"),
        "seconds_p50": round(statistics.median(seconds), 2),
        "seconds_max": round(max(seconds), 2),
        "answers": [{"prompt": r["prompt"], "answer": a, "loops": repeated(a)} for r, a in zip(rows, answers,
                                                                                              strict=True)],
    }


async def both_run(args: argparse.Namespace) -> dict[str, Any]:
    """`both` turns through ChatService on the dev questions: does the answer hold an answer keyword, cite?"""
    from finetune.evaluation.textmetrics import loop_rate
    from ingest.evaluation import load_questions
    from service.app import build_chat_service
    from service.engines import SamplingParams
    from service.protocol import KongmingOptions
    from service.settings import ZHEN_HUAN, ZHUGE_LIANG, get_service_settings, ingest_settings_for

    persona = ZHUGE_LIANG.model_copy(update={"grounded": "generate" if args.generate else "extractive"})
    settings = get_service_settings(data_dir=args.data_dir, personas=[persona, ZHEN_HUAN])
    chat = build_chat_service(settings, ingest_settings_for(settings))
    rows: list[dict[str, Any]] = []
    questions = [q for q in load_questions(args.both) if q.chapter][: args.n or None]  # answerable ones
    for q in questions:
        started = time.perf_counter()
        reply = await chat.reply([{"role": "user", "content": q.question}], "kongming",
                                 SamplingParams(temperature=args.temperature, seed=0),
                                 KongmingOptions(route="both", persona=persona.name))
        text = (await reply.complete()).text
        cited = [c.index for c in reply.citations]
        rows.append({"id": q.id, "answer": text, "seconds": round(time.perf_counter() - started, 2),
                     "keyword": any(k in text for k in q.answer_keywords),
                     "cites": bool(cited) and any(f"[{n}]" in text for n in cited), "citations": len(cited)})
        print(f"{q.id} {rows[-1]['seconds']}s kw={rows[-1]['keyword']} | {text[:80]}", file=sys.stderr, flush=True)
    await chat.engines.aclose()
    n = max(len(rows), 1)
    return {
        "mode": persona.grounded,
        "questions": len(rows),
        "answer_keyword_rate": round(sum(r["keyword"] for r in rows) / n, 4),
        "cites_in_text_rate": round(sum(r["cites"] for r in rows) / n, 4),
        "loop_rate": round(loop_rate([r["answer"] for r in rows]), 4),
        "mean_chars": round(sum(len(r["answer"]) for r in rows) / n, 1),
        "seconds_p50": round(statistics.median([r["seconds"] for r in rows]), 2) if rows else None,
        "rows": rows,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=20, help="prompts (questions with --both); 0: all")
    p.add_argument("--temperature", type=float, default=0.7, help="the API's default is 0.7")
    p.add_argument("--no-controls", action="store_true", help="the decoding before issue 12")
    p.add_argument("--set", action="append", metavar="FIELD=JSON", help="a persona decoding field, e.g. "
                   "repetition_penalty=1.2 or no_repeat_ngram_size=0 (repeatable)")
    p.add_argument("--samples", type=Path, default=ADAPTER / "eval_samples.jsonl")
    p.add_argument("--data-dir", type=Path, default=Path("data"))
    p.add_argument("--both", type=Path, metavar="QUESTIONS", help="measure `both` turns on these dev questions")
    p.add_argument("--generate", action="store_true", help="--both: the persona model reads the passages")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    import os

    args.data_dir = Path(os.environ.get("KONGMING_DATA_DIR", args.data_dir))
    started = time.perf_counter()
    result = asyncio.run(both_run(args) if args.both else persona_run(args))
    result = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared), Python {platform.python_version()}",
        "command": " ".join(sys.argv),
        "wall_seconds": round(time.perf_counter() - started, 1),
        **result,
    }
    text = json.dumps(result, ensure_ascii=False, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    summary = {k: v for k, v in result.items() if k not in ("answers", "rows")}
    print(json.dumps(summary, ensure_ascii=False, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
