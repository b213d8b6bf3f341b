"""Peak RSS of the service's in-process engines with one persona loaded vs two on one base (peft multi-adapter).

Each case runs in a fresh process: the service's Engines builds the persona engines from settings, each persona
answers one short greedy request, then the process reports its peak RSS (ru_maxrss). A persona whose adapter
folder is missing is given the first persona's adapter under its own name (same size: the memory question is
the same), and the result says so.

    .venv/bin/python bench/adapters_bench.py --data-dir /tmp/nc-data --out bench/results/adapters.json

`--serve` measures the running service instead: `kongming serve` in its own process, a chat as 诸葛亮, its peak RSS
(VmHWM), then a chat as 甄嬛 and its peak RSS again (the second persona's adapter joins the first on one base).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import write_result


def run_case(n: int, data_dir: str) -> dict[str, object]:
    from service.answer.persona import Engines
    from service.engines import SamplingParams
    from service.settings import ZHEN_HUAN, ZHUGE_LIANG, get_service_settings

    personas, substituted = [], []
    for p in [ZHUGE_LIANG, ZHEN_HUAN][:n]:
        if p.adapter and not (Path(p.adapter) / "adapter_config.json").is_file():
            substituted.append(p.name)
            p = p.model_copy(update={"adapter": ZHUGE_LIANG.adapter})
        personas.append(p)
    engines = Engines(get_service_settings(data_dir=Path(data_dir), personas=personas))
    params = SamplingParams(max_tokens=8, temperature=0.0)

    async def answer() -> list[str]:
        out = []
        for p in personas:
            engine = await engines.persona(p)
            out.append((await engine.generate([{"role": "user", "content": "你好"}], params)).text)
        return out

    started = time.perf_counter()
    texts = asyncio.run(answer())
    return {"personas": n, "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "seconds": round(time.perf_counter() - started, 1), "adapter_substituted_for": substituted,
            "answers": texts}


def serve_case(data_dir: str) -> dict[str, object]:
    import openai

    from bench.job_bench import start_service

    def peak_mb(pid: int) -> float:
        status = Path(f"/proc/{pid}/status").read_text()
        return round(int(next(x for x in status.splitlines() if x.startswith("VmHWM")).split()[1]) / 1024, 1)

    proc, url = start_service(Path(data_dir), "gemma-3-270m")
    try:
        client = openai.OpenAI(base_url=url, api_key="bench-key", max_retries=0, timeout=600)
        peaks, answers = [], []
        for persona in ("zhuge-liang", "zhen-huan"):
            r = client.chat.completions.create(model=f"kongming-persona-{persona}", max_tokens=16,
                                               messages=[{"role": "user", "content": "你好"}])  # fmt: skip
            answers.append(r.choices[0].message.content)
            peaks.append(peak_mb(proc.pid))
    finally:
        proc.terminate()
        proc.wait(60)
    return {"bench": "adapters (kongming serve)", "date": time.strftime("%Y-%m-%d"), "peak_rss_mb_one": peaks[0],
            "peak_rss_mb_two": peaks[1], "ratio_two_to_one": round(peaks[1] / peaks[0], 3), "answers": answers}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default="data", help="KONGMING_DATA_DIR holding models/gemma-3-270m")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--case", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--serve", action="store_true", help="measure a running `kongming serve` (data dir with a kb)")
    args = ap.parse_args()
    if args.serve:
        write_result(serve_case(args.data_dir), args.out)
        return
    if args.case:
        print(json.dumps(run_case(args.case, args.data_dir), ensure_ascii=False))
        return
    cases = []
    for n in (1, 2):
        proc = subprocess.run([sys.executable, __file__, "--case", str(n), "--data-dir", args.data_dir],
                              capture_output=True, text=True, check=True)
        cases.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    one, two = (float(c["peak_rss_mb"]) for c in cases)
    write_result({"bench": "adapters", "date": time.strftime("%Y-%m-%d"), "cases": cases,
                  "ratio_two_to_one": round(two / one, 3)}, args.out)


if __name__ == "__main__":
    main()
