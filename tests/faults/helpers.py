"""What the fault tests break things with: a `chroma run` server that can be killed and restarted on its port,
tmpfs mounts (a disk that fills up, a folder that turns read-only), and peak memory of a command."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.ports import free_port

__all__ = ["free_port"]

ROOT = Path(__file__).resolve().parents[2]


class ChromaServer:
    """A real `chroma run` process over `path`; `kill` and `start` again keep the port and the data."""

    def __init__(self, path: Path, port: int | None = None) -> None:
        self.path, self.port = path, port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ChromaServer:
        exe = shutil.which("chroma") or str(Path(sys.executable).with_name("chroma"))
        self.proc = subprocess.Popen(
            [exe, "run", "--path", str(self.path), "--host", "127.0.0.1", "--port", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/api/v2/heartbeat", timeout=1).read()
                return self
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    pytest.fail(f"chroma server did not start on port {self.port}")
                time.sleep(0.3)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Stop it the hard way (SIGKILL) or the polite way (SIGTERM), and wait until it is gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        self.kill(signal.SIGTERM)


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A small tmpfs at `path` (needs root); skips the test with the reason where mounting is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0777", "tmpfs", str(path)],
                       capture_output=True, text=True)  # fmt: skip
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({(r.stderr or r.stdout).strip()}): disk-full tests need root")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def remount(path: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True)


def fill(path: Path, leave: int) -> Path:
    """A ballast file that takes all the space of the filesystem at `path` but `leave` bytes."""
    ballast = path / "ballast"
    st = os.statvfs(path)
    free = st.f_bavail * st.f_frsize
    with open(ballast, "wb") as f:
        f.truncate(0)
        f.write(b"\0" * max(free - leave, 0))
    return ballast


# Python code giving the process's own peak resident KiB. Not ru_maxrss: Linux carries that over from the parent
# across fork and exec, so a child of a large pytest process would report the parent's size as its own.
PEAK_KB = "next(int(line.split()[1]) for line in open('/proc/self/status') if line.startswith('VmHWM:'))"


def run_measured(args: list[str], env: dict[str, str], cwd: Path | None = None) -> tuple[int, str, str, float]:
    """Run `python -m ARGS` and return (exit code, stdout, stderr, the process's peak resident MiB)."""
    code = (
        "import runpy, sys\n"
        "sys.argv = sys.argv[1:]\n"
        "try:\n    runpy.run_module(sys.argv[0], run_name='__main__')\n"
        "except SystemExit as e:\n    rc = e.code\nelse:\n    rc = 0\n"
        f"print('PEAK_RSS_KB', {PEAK_KB}, file=sys.stderr)\n"
        "sys.exit(rc)\n"
    )
    r = subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=cwd, capture_output=True, text=True,
                       timeout=600)  # fmt: skip
    peak = next(int(line.split()[1]) for line in r.stderr.splitlines() if line.startswith("PEAK_RSS_KB"))
    return r.returncode, r.stdout, r.stderr, peak / 1024


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "KONGMING_DATA_DIR": str(tmp_path / "data"),
        "KONGMING_CHUNK_SIZE": "80",
        "KONGMING_CHUNK_OVERLAP": "20",
        "PYTHONPATH": str(ROOT),
        **extra,
    }


@contextmanager
def lockable_dir(path: Path) -> Iterator[Callable[[], None]]:
    """A folder the test fills and then turns read-only: a tmpfs remounted read-only when running as root
    (root writes through permission bits), the permission bits for anyone else. Yields the switch."""
    if os.geteuid() != 0:
        path.mkdir(parents=True, exist_ok=True)

        def folders() -> list[Path]:
            return [path, *(p for p in path.rglob("*") if p.is_dir())]

        def lock() -> None:
            for p in folders():
                p.chmod(0o555)

        try:
            yield lock
        finally:
            for p in folders():
                p.chmod(0o755)
        return
    with tmpfs(path, "64m"):
        yield lambda: remount(path, "ro")


def big_novel(novel: Path, out: Path, copies: int = 12) -> Path:
    """The test novel `copies` times over, each copy with its own words, so that no chunk repeats."""
    text = novel.read_text(encoding="utf-8")
    marks = "甲乙丙丁戊己庚辛壬癸子丑寅卯辰巳午未申酉戌亥"[:copies]
    out.write_text("\n".join(text.replace("。", f"，{m}也。") for m in marks), encoding="utf-8")
    return out


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], env=env, capture_output=True, text=True, timeout=600)


def store_census(env: dict[str, str]) -> tuple[int, int, int, int]:
    """(chunk rows, distinct chunk ids, Chroma's count, chunks the complete documents hold) of the store."""
    code = (
        "from ingest.pipeline import open_store; from ingest.settings import get_settings\n"
        "s = open_store(get_settings()); ids = [c.chunk_id for c in s.get_chunks()]\n"
        "n = sum(r.n_chunks for r in s.records().values() if r.status == 'complete')\n"
        "print(len(ids), len(set(ids)), s.count(), n)"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    a, b, c, d = map(int, out.stdout.split())
    return a, b, c, d
