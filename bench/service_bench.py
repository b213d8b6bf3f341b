"""Benchmark: the service's overhead in front of an OpenAI-compatible upstream, measured side by side in one run.

    python bench/service_bench.py --pin split --out bench/results/service_$(date +%F).json

Starts bench/fast_upstream.py and `kongming serve --upstream-url ... --no-ui` as separate processes, then drives
both from this process (a raw asyncio + httptools HTTP/1.1 client on uvloop, so the load client stays light) with
the persona-forced model `kongming-persona-zhuge-liang`, the route that proxies straight to the upstream:

  latency     non-streamed requests one at a time, direct and through the service alternating: p50/p95, added ms
  ttfb        streamed requests one at a time, alternating: first response byte and first content token
  throughput  32 concurrent streaming clients x a fixed request count, direct and through alternating per round,
              at each inter-token delay in --delays: tokens/s, requests/s, through/direct ratio per round

The direct requests carry the body the service itself sends upstream (persona system prompt + message), so the
upstream does the same work on both paths. CPU time of each process per phase is read from /proc, together with
the CPU time used by everything else on the machine (other jobs running at the same time).

--pin split (default) puts the upstream and this client on CPU 0 and the service on CPU 1 (a GPU upstream never
shares the service's CPU); --pin none lets the scheduler place all three on the two cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import httptools
from common import summary, write_result

ROOT = Path(__file__).resolve().parents[1]
PERSONA_MODEL = "kongming-persona-zhuge-liang"
QUESTION = "先生，近来可好？"
_TOKEN = re.compile(rb'"content":"[^"]')
_USAGE = re.compile(rb'"completion_tokens": ?(\d+)')
TICK = os.sysconf("SC_CLK_TCK")


# -- a light HTTP/1.1 keep-alive client -------------------------------------------------------------------------


@dataclass
class Result:
    status: int
    total_ms: float
    first_byte_ms: float
    first_token_ms: float | None
    tokens: int
    complete: bool


class Conn(asyncio.Protocol):
    """One keep-alive connection; one request at a time. httptools parses (and de-chunks) the response."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.done: asyncio.Future[None] | None = None
        self.body = bytearray()
        self.t_first: float | None = None
        self.t_token: float | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.t_first is None:
            self.t_first = time.perf_counter()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)

    def on_body(self, body: bytes) -> None:
        if self.t_token is None and _TOKEN.search(body):
            self.t_token = time.perf_counter()
        self.body += body

    def on_message_complete(self) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionError("connection closed by the server"))

    def _fail(self, exc: BaseException) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_exception(exc)

    async def request(self, raw: bytes) -> Result:
        assert self.transport is not None
        self.body = bytearray()
        self.t_first = self.t_token = None
        self.done = asyncio.get_running_loop().create_future()
        t0 = time.perf_counter()
        self.transport.write(raw)
        await self.done
        t1 = time.perf_counter()
        body = bytes(self.body)
        stream = body.startswith(b"data:")
        # tokens from the usage of the last chunk (the service may forward several tokens in one chunk)
        used = _USAGE.findall(body) if stream else []
        tokens = int(used[-1]) if used else 0
        return Result(
            status=self.parser.get_status_code(),
            total_ms=(t1 - t0) * 1000,
            first_byte_ms=((self.t_first or t1) - t0) * 1000,
            first_token_ms=((self.t_token - t0) * 1000) if self.t_token else None,
            tokens=tokens,
            complete=body.endswith(b"data: [DONE]\n\n") if stream else body.endswith(b"}"),
        )

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def connect(port: int) -> Conn:
    _, conn = await asyncio.get_running_loop().create_connection(Conn, "127.0.0.1", port)
    return conn


def http_post(port: int, path: str, body: dict[str, Any]) -> bytes:
    data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n").encode()
    return head + data


class Target:
    def __init__(self, name: str, port: int, model: str, messages: list[dict[str, str]], tokens: int) -> None:
        self.name = name
        self.port = port
        base = {"model": model, "messages": messages, "max_tokens": tokens}
        if name == "direct":  # what the service's OpenAICompatibleEngine sends
            base.update(temperature=0.7, top_p=1.0)
        self.plain = http_post(port, "/v1/chat/completions", base)
        self.stream = http_post(port, "/v1/chat/completions",
                                {**base, "stream": True, "stream_options": {"include_usage": True}})


# -- processes ----------------------------------------------------------------------------------------------------


def cpu_times(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def machine_busy() -> float:
    """CPU seconds all processes have used (user+nice+system+irq+softirq+steal), from /proc/stat."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (f[0] + f[1] + f[2] + f[5] + f[6] + f[7]) / TICK


class CpuMeter:
    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids

    def snap(self) -> dict[str, float]:
        s = {name: cpu_times(pid) for name, pid in self.pids.items()}
        s["machine"] = machine_busy()
        s["wall"] = time.perf_counter()
        return s

    @staticmethod
    def diff(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
        d = {k: round(b[k] - a[k], 3) for k in a}
        d["others"] = round(d["machine"] - sum(v for k, v in d.items() if k not in ("machine", "wall")), 3)
        return d


def wait_http(port: int, path: str, seconds: float, proc: subprocess.Popen[bytes]) -> None:
    end = time.time() + seconds
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"process for port {port} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing answered on port {port} within {seconds}s")


def set_upstream(port: int, **cfg: float) -> None:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/_config", data=json.dumps(cfg).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=5) as r:
        r.read()


def pinned(cmd: list[str], cpus: str | None) -> list[str]:
    return ["taskset", "-c", cpus, *cmd] if cpus is not None else cmd


def upstream_cmd(port: int, tokens: int) -> list[str]:
    return [sys.executable, str(ROOT / "bench" / "fast_upstream.py"), "--port", str(port), "--tokens", str(tokens)]


def service_cmd(upstream_url: str, port: int, data_dir: Path) -> list[str]:
    kongming = Path(sys.executable).with_name("kongming")
    serve = [str(kongming)] if kongming.exists() else [sys.executable, "-m", "service.cli"]
    return [*serve, "serve", "--upstream-url", upstream_url, "--no-ui", "--host", "127.0.0.1", "--port", str(port),
            "--data-dir", str(data_dir)]


@contextmanager
def running(up_cmd: list[str], up_port: int, sv_cmd: list[str], sv_port: int) -> Iterator[tuple[int, int]]:
    """The fake upstream, then the service, each answering /health before the block runs (their pids are
    yielded); both are stopped (SIGINT, then SIGKILL after 10 s) when it ends."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        up = subprocess.Popen(up_cmd, cwd=ROOT)
        procs.append(up)
        wait_http(up_port, "/health", 30, up)
        sv = subprocess.Popen(sv_cmd, cwd=ROOT)
        procs.append(sv)
        wait_http(sv_port, "/health", 120, sv)
        yield up.pid, sv.pid
    finally:
        for proc in reversed(procs):
            proc.send_signal(signal.SIGINT)
        for proc in reversed(procs):
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


# -- phases -------------------------------------------------------------------------------------------------------


async def paired(direct: Target, service: Target, n: int, warm: int, stream: bool) -> dict[str, list[Result]]:
    """n sequential request pairs, the order alternating so neither path always runs second."""
    conns = {"direct": await connect(direct.port), "service": await connect(service.port)}
    raws = {t.name: (t.stream if stream else t.plain) for t in (direct, service)}
    out: dict[str, list[Result]] = {"direct": [], "service": []}
    for i in range(warm + n):
        order = ("direct", "service") if i % 2 == 0 else ("service", "direct")
        for name in order:
            r = await conns[name].request(raws[name])
            if r.status != 200 or not r.complete:
                raise RuntimeError(f"{name}: bad response (status {r.status})")
            if i >= warm:
                out[name].append(r)
    for c in conns.values():
        c.close()
    return out


async def load(target: Target, concurrency: int, total: int) -> tuple[float, list[Result]]:
    """`concurrency` clients share `total` streamed requests; returns wall seconds and the results."""
    conns = [await connect(target.port) for _ in range(concurrency)]
    results: list[Result] = []
    left = total

    async def client(conn: Conn) -> None:
        nonlocal left
        while left > 0:
            left -= 1
            r = await conn.request(target.stream)
            if r.status != 200 or not r.complete:
                raise RuntimeError(f"{target.name}: bad streamed response (status {r.status})")
            results.append(r)

    t0 = time.perf_counter()
    await asyncio.gather(*(client(c) for c in conns))
    wall = time.perf_counter() - t0
    for c in conns:
        c.close()
    return wall, results


def lat_block(results: list[Result], field: str) -> dict[str, float]:
    return summary([getattr(r, field) for r in results if getattr(r, field) is not None])


async def run_phases(args: argparse.Namespace, meter: CpuMeter) -> dict[str, Any]:
    upstream_msgs = [{"role": "system", "content": _persona_prompt()}, {"role": "user", "content": QUESTION}]
    direct = Target("direct", args.upstream_port, "zhuge-liang", upstream_msgs, args.tokens)
    service = Target("service", args.service_port, PERSONA_MODEL, [{"role": "user", "content": QUESTION}],
                     args.tokens)
    out: dict[str, Any] = {}

    # warm-up: the service opens the knowledge base on its first request; both paths fill their pools
    set_upstream(args.upstream_port, tokens=args.tokens, delay_ms=0, ttft_ms=0)
    await paired(direct, service, 0, 20, stream=False)
    await load(direct, args.concurrency, args.concurrency * 2)
    await load(service, args.concurrency, args.concurrency * 2)

    # (a) non-streamed latency, one request at a time
    a = meter.snap()
    res = await paired(direct, service, args.latency_requests, 20, stream=False)
    cpu = meter.diff(a, meter.snap())
    d, s = lat_block(res["direct"], "total_ms"), lat_block(res["service"], "total_ms")
    diffs = [y.total_ms - x.total_ms for x, y in zip(res["direct"], res["service"], strict=True)]
    out["latency_nonstream"] = {
        "upstream": {"tokens": args.tokens, "delay_ms": 0, "ttft_ms": 0},
        "direct": d, "service": s,
        "added_p50_ms": round(s["p50_ms"] - d["p50_ms"], 3),
        "added_p95_ms": round(s["p95_ms"] - d["p95_ms"], 3),
        "paired_added_p50_ms": round(statistics.median(diffs), 3),
        "service_cpu_ms_per_request": round(cpu["service"] * 1000 / args.latency_requests, 3),
        "cpu_seconds": cpu,
        "target_added_p50_ms": 5.0,
    }
    print("latency", json.dumps(out["latency_nonstream"], ensure_ascii=False), flush=True)

    # (c) time to first byte / first token, one streamed request at a time
    set_upstream(args.upstream_port, tokens=args.tokens, delay_ms=args.ttfb_delay_ms, ttft_ms=0)
    a = meter.snap()
    res = await paired(direct, service, args.ttfb_requests, 10, stream=True)
    cpu = meter.diff(a, meter.snap())
    blk: dict[str, Any] = {"upstream": {"tokens": args.tokens, "delay_ms": args.ttfb_delay_ms, "ttft_ms": 0}}
    for field in ("first_byte_ms", "first_token_ms"):
        d, s = lat_block(res["direct"], field), lat_block(res["service"], field)
        blk[field] = {"direct": d, "service": s, "added_p50_ms": round(s["p50_ms"] - d["p50_ms"], 3),
                      "added_p95_ms": round(s["p95_ms"] - d["p95_ms"], 3)}
    blk["cpu_seconds"] = cpu
    blk["target_added_ms"] = 10.0
    out["ttfb"] = blk
    print("ttfb", json.dumps(blk, ensure_ascii=False), flush=True)

    # (b) throughput with `concurrency` streaming clients, per inter-token delay
    out["throughput"] = {}
    for delay in args.delays:
        set_upstream(args.upstream_port, tokens=args.tokens, delay_ms=delay, ttft_ms=0)
        rounds = []
        for rnd in range(args.rounds):
            row: dict[str, Any] = {}
            for target in ((direct, service) if rnd % 2 == 0 else (service, direct)):
                a = meter.snap()
                wall, res_ = await load(target, args.concurrency, args.stream_requests)
                cpu = meter.diff(a, meter.snap())
                toks = sum(r.tokens for r in res_)
                if toks != args.tokens * len(res_):
                    raise RuntimeError(f"{target.name}: {toks} tokens in {len(res_)} answers")
                row[target.name] = {
                    "wall_s": round(wall, 3),
                    "tokens_per_s": round(toks / wall, 1),
                    "requests_per_s": round(len(res_) / wall, 2),
                    "first_byte": lat_block(res_, "first_byte_ms"),
                    "first_token": lat_block(res_, "first_token_ms"),
                    "total": lat_block(res_, "total_ms"),
                    "cpu_seconds": cpu,
                }
            row["ratio_tokens_per_s"] = round(row["service"]["tokens_per_s"] / row["direct"]["tokens_per_s"], 3)
            row["service_cpu_us_per_token"] = round(
                row["service"]["cpu_seconds"]["service"] * 1e6 / (args.tokens * args.stream_requests), 2)
            rounds.append(row)
            print(f"throughput delay={delay}ms round {rnd}: direct {row['direct']['tokens_per_s']} tok/s, "
                  f"service {row['service']['tokens_per_s']} tok/s, ratio {row['ratio_tokens_per_s']}, "
                  f"service CPU {row['service_cpu_us_per_token']} us/token, "
                  f"others {row['service']['cpu_seconds']['others']} s", flush=True)
        ratios = [r["ratio_tokens_per_s"] for r in rounds]

        def med(side: str, key: str, rows: list[dict[str, Any]] = rounds) -> float:
            return round(statistics.median(r[side][key] for r in rows), 2)

        out["throughput"][f"delay_{delay:g}ms"] = {
            "upstream": {"tokens": args.tokens, "delay_ms": delay, "ttft_ms": 0},
            "concurrency": args.concurrency,
            "requests_per_round": args.stream_requests,
            "direct_tokens_per_s_median": med("direct", "tokens_per_s"),
            "service_tokens_per_s_median": med("service", "tokens_per_s"),
            "direct_requests_per_s_median": med("direct", "requests_per_s"),
            "service_requests_per_s_median": med("service", "requests_per_s"),
            "ratio_median": round(statistics.median(ratios), 3),
            "ratio_min": min(ratios),
            "ratio_max": max(ratios),
            "first_byte_p50_ms_under_load": {
                side: round(statistics.median(r[side]["first_byte"]["p50_ms"] for r in rounds), 3)
                for side in ("direct", "service")
            },
            "service_cpu_us_per_token_median": round(statistics.median(r["service_cpu_us_per_token"]
                                                                       for r in rounds), 2),
            "target_ratio": 0.9,
            "rounds": rounds,
        }
    return out


def _persona_prompt() -> str:
    sys.path.insert(0, str(ROOT))
    from service.settings import ZHUGE_LIANG

    return ZHUGE_LIANG.system_prompt


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pin", choices=["split", "none"], default="split")
    p.add_argument("--upstream-port", type=int, default=8101)
    p.add_argument("--service-port", type=int, default=8102)
    p.add_argument("--data-dir", type=Path, default=Path("data"))
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--latency-requests", type=int, default=300)
    p.add_argument("--ttfb-requests", type=int, default=200)
    p.add_argument("--ttfb-delay-ms", type=float, default=1.0)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--stream-requests", type=int, default=640, help="streamed requests per throughput round")
    p.add_argument("--delays", type=lambda s: [float(x) for x in s.split(",")], default=[0.0, 1.0, 2.0, 5.0],
                   help="inter-token delays (ms) for the throughput phase, comma-separated")
    p.add_argument("--rounds", type=int, default=4, help="throughput rounds per delay (direct and service each)")
    p.add_argument("--serve-cmd", help="start the service with this command instead of `kongming serve` "
                   "({port} and {upstream} are filled in), e.g. to compare a patched build")
    p.add_argument("--label", help="free text stored in the results (what differs in this run)")
    p.add_argument("--out", type=Path)
    args = p.parse_args()

    cpus = {"upstream": "0", "service": "1", "client": "0"} if args.pin == "split" else {}
    if cpus and not shutil.which("taskset"):
        print("taskset not found: use --pin none", file=sys.stderr)
        return 2
    up_cmd = pinned(upstream_cmd(args.upstream_port, args.tokens), cpus.get("upstream"))
    upstream_url = f"http://127.0.0.1:{args.upstream_port}/v1"
    if args.serve_cmd:
        sv_cmd = pinned(args.serve_cmd.format(port=args.service_port, upstream=upstream_url).split(),
                        cpus.get("service"))
    else:
        sv_cmd = pinned(service_cmd(upstream_url, args.service_port, args.data_dir), cpus.get("service"))
    with running(up_cmd, args.upstream_port, sv_cmd, args.service_port) as (up_pid, sv_pid):
        if "client" in cpus:
            os.sched_setaffinity(0, {int(cpus["client"])})
        meter = CpuMeter({"upstream": up_pid, "service": sv_pid, "client": os.getpid()})
        started = time.perf_counter()
        import uvloop

        results = uvloop.run(run_phases(args, meter))
        elapsed = time.perf_counter() - started

    out: dict[str, Any] = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "command": "python " + " ".join(sys.argv),
        "label": args.label,
        "pinning": ({"upstream_cpu": cpus["upstream"], "service_cpu": cpus["service"], "client_cpu": cpus["client"]}
                    if cpus else "none: upstream, service and client share both cores"),
        "processes": {"upstream": " ".join(up_cmd), "service": " ".join(sv_cmd),
                      "client": "this process: asyncio + httptools on uvloop, keep-alive connections"},
        "loadavg_after": Path("/proc/loadavg").read_text().split()[:3],
        "seconds": round(elapsed, 1),
        **results,
    }
    lat, tt = results["latency_nonstream"], results["ttfb"]
    print(f"\nnon-streamed p50: direct {lat['direct']['p50_ms']} ms, service {lat['service']['p50_ms']} ms, "
          f"added {lat['added_p50_ms']} ms (target <= 5); p95 added {lat['added_p95_ms']} ms")
    print(f"first byte p50: direct {tt['first_byte_ms']['direct']['p50_ms']} ms, service "
          f"{tt['first_byte_ms']['service']['p50_ms']} ms, added {tt['first_byte_ms']['added_p50_ms']} ms "
          f"(target <= 10); first token added {tt['first_token_ms']['added_p50_ms']} ms")
    for key, t in results["throughput"].items():
        print(f"{args.concurrency} streams, {key}: direct {t['direct_tokens_per_s_median']} tok/s "
              f"({t['direct_requests_per_s_median']} req/s), service {t['service_tokens_per_s_median']} tok/s "
              f"({t['service_requests_per_s_median']} req/s), ratio {t['ratio_median']} "
              f"[{t['ratio_min']}..{t['ratio_max']}] (target >= 0.9)")
    write_result(out, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
