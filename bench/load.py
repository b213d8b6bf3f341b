"""Load test: ramp concurrent streaming chat clients against the service on 127.0.0.1, then soak at 80 % of the
saturation rate, watching errors, latency and the service's memory.

    python bench/load.py --model kongming --out bench/results/load_$(date +%F).json

Starts bench/fast_upstream.py (a fake OpenAI-compatible server: `--tokens` tokens, one every `--delay-ms`) and
`kongming serve --upstream-url ... --no-ui` as separate processes, then:

  ramp   closed loop: for each concurrency in --levels, that many clients send streamed chat requests back to
         back for --step-seconds; requests/s, latency p50/p95/p99 (whole stream and first byte), errors.
         Saturation: the lowest level whose requests/s is within 5 % of the best level's.
  soak   open loop: requests start at 80 % of the saturation rate (Poisson arrivals) for --soak-seconds;
         errors, latency, and the service's RSS sampled every 5 s (start, end, max, slope over the second half).

`--model kongming` goes through the router and retrieval (needs a knowledge base in --data-dir: `ingest add`);
`--model kongming-persona-zhuge-liang` measures the proxied persona path only. Questions rotate over --messages.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

from common import summary, write_result
from service_bench import (
    ROOT,
    Conn,
    Result,
    connect,
    http_post,
    running,
    service_cmd,
    set_upstream,
    upstream_cmd,
)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def questions(path: Path) -> list[str]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r["message"] for r in rows]


class Requests:
    """Pre-built raw HTTP requests, one per question, handed out in turn."""

    def __init__(self, port: int, model: str, texts: list[str], max_tokens: int) -> None:
        self.raws = [
            http_post(port, "/v1/chat/completions", {
                "model": model, "messages": [{"role": "user", "content": t}], "max_tokens": max_tokens,
                "stream": True, "stream_options": {"include_usage": True}})
            for t in texts
        ]  # fmt: skip
        self.i = 0

    def next(self) -> bytes:
        self.i = (self.i + 1) % len(self.raws)
        return self.raws[self.i]


def block(results: list[Result], errors: int, seconds: float) -> dict[str, Any]:
    ok = [r for r in results if r.status == 200 and r.complete]
    return {
        "requests": len(results) + errors,
        "ok": len(ok),
        "errors": errors + len(results) - len(ok),
        "error_rate": round((errors + len(results) - len(ok)) / max(1, len(results) + errors), 4),
        "seconds": round(seconds, 2),
        "requests_per_s": round(len(ok) / seconds, 2),
        "tokens_per_s": round(sum(r.tokens for r in ok) / seconds, 1),
        "latency": summary([r.total_ms for r in ok]),
        "first_byte": summary([r.first_byte_ms for r in ok]),
    }


async def one(conn_pool: list[Conn], port: int, raw: bytes) -> Result | None:
    conn = conn_pool.pop() if conn_pool else await connect(port)
    try:
        r = await conn.request(raw)
    except (ConnectionError, OSError):
        conn.close()
        return None
    conn_pool.append(conn)
    return r


async def ramp_level(port: int, reqs: Requests, clients: int, seconds: float) -> dict[str, Any]:
    results: list[Result] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal errors
        pool: list[Conn] = []
        while time.perf_counter() < stop:
            r = await one(pool, port, reqs.next())
            if r is None:
                errors += 1
            else:
                results.append(r)
        for c in pool:
            c.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return {"clients": clients, **block(results, errors, time.perf_counter() - t0)}


async def soak(port: int, reqs: Requests, rate: float, seconds: float, pid: int) -> dict[str, Any]:
    results: list[Result] = []
    errors = 0
    pool: list[Conn] = []
    tasks: set[asyncio.Task[None]] = set()
    rss: list[tuple[float, float]] = []
    rng = random.Random(0)

    async def fire() -> None:
        nonlocal errors
        r = await one(pool, port, reqs.next())
        if r is None:
            errors += 1
        else:
            results.append(r)

    t0 = time.perf_counter()
    next_sample = t0
    t = t0
    while t - t0 < seconds:
        now = time.perf_counter()
        if now >= next_sample:
            rss.append((round(now - t0, 1), round(rss_mib(pid), 1)))
            next_sample += 5.0
        if now < t:
            await asyncio.sleep(t - now)
        task = asyncio.create_task(fire())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        t += rng.expovariate(rate)
    await asyncio.gather(*tasks)
    wall = time.perf_counter() - t0
    rss.append((round(wall, 1), round(rss_mib(pid), 1)))
    for c in pool:
        c.close()
    half = [(x, y) for x, y in rss if x >= wall / 2]
    slope = statistics.linear_regression([x for x, _ in half], [y for _, y in half]).slope * 60 if len(half) > 2 else 0
    return {
        "target_rate_per_s": round(rate, 2),
        **block(results, errors, wall),
        "rss_mib": {"start": rss[0][1], "end": rss[-1][1], "max": max(y for _, y in rss),
                    "slope_second_half_mib_per_min": round(slope, 3)},
        "rss_samples": rss,
    }


async def run(args: argparse.Namespace, pid: int) -> dict[str, Any]:
    reqs = Requests(args.service_port, args.model, questions(args.messages), args.tokens)
    for _ in range(3):  # warm-up: models loaded, example matrix embedded
        r = await one([], args.service_port, reqs.next())
        if r is None or r.status != 200:
            raise RuntimeError(f"warm-up request failed: {r}")
    ramp = []
    for clients in args.levels:
        level = await ramp_level(args.service_port, reqs, clients, args.step_seconds)
        print(f"ramp {clients:3d} clients: {level['requests_per_s']} req/s, p50 {level['latency']['p50_ms']} ms, "
              f"p95 {level['latency']['p95_ms']} ms, errors {level['errors']}", flush=True)
        ramp.append(level)
    best = max(level["requests_per_s"] for level in ramp)
    saturation = next(level for level in ramp if level["requests_per_s"] >= 0.95 * best)
    out: dict[str, Any] = {"ramp": ramp, "saturation": {"clients": saturation["clients"],
                                                         "requests_per_s": saturation["requests_per_s"]}}
    if args.soak_seconds > 0:
        rate = 0.8 * saturation["requests_per_s"]
        out["soak"] = await soak(args.service_port, reqs, rate, args.soak_seconds, pid)
        s = out["soak"]
        print(f"soak {args.soak_seconds:.0f} s at {rate:.1f} req/s: {s['requests_per_s']} req/s, errors "
              f"{s['errors']}, p95 {s['latency']['p95_ms']} ms, RSS {s['rss_mib']}", flush=True)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="kongming")
    p.add_argument("--messages", type=Path, default=ROOT / "eval" / "route_dev.jsonl")
    p.add_argument("--data-dir", type=Path, default=Path("data"))
    p.add_argument("--upstream-port", type=int, default=8111)
    p.add_argument("--service-port", type=int, default=8112)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--delay-ms", type=float, default=2.0, help="upstream inter-token delay")
    p.add_argument("--levels", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4, 8, 16, 32, 64])
    p.add_argument("--step-seconds", type=float, default=15.0)
    p.add_argument("--soak-seconds", type=float, default=300.0)
    p.add_argument("--out", type=Path)
    args = p.parse_args()

    upstream_url = f"http://127.0.0.1:{args.upstream_port}/v1"
    started = time.perf_counter()
    with running(upstream_cmd(args.upstream_port, args.tokens), args.upstream_port,
                 service_cmd(upstream_url, args.service_port, args.data_dir), args.service_port) as (_, sv_pid):
        set_upstream(args.upstream_port, tokens=args.tokens, delay_ms=args.delay_ms, ttft_ms=0)
        import uvloop

        results = uvloop.run(run(args, sv_pid))
    out = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "command": "python " + " ".join(sys.argv),
        "upstream": {"tokens": args.tokens, "delay_ms": args.delay_ms},
        "model": args.model,
        "seconds": round(time.perf_counter() - started, 1),
        **results,
    }
    write_result(out, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
