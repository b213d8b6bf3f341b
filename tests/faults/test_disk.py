"""A data folder that is read-only or runs out of space: `ingest` and `kongming serve` fail with an error that
names the folder, leave the store consistent, and the same command finishes once there is room."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request

import pytest

from .helpers import big_novel, cli, cli_env, fill, free_port, lockable_dir, store_census, tmpfs

pytestmark = pytest.mark.integration


def _assert_clean_error(r: subprocess.CompletedProcess[str], path: object) -> None:
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert str(path) in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_ingest_into_a_read_only_data_dir_names_the_folder(tmp_path, novel_file):
    with lockable_dir(tmp_path / "ro") as lock:
        data = tmp_path / "ro" / "data"
        env = cli_env(tmp_path, KONGMING_DATA_DIR=str(data))
        assert cli("ingest.cli", "add", str(novel_file), "--no-progress", env=env).returncode == 0
        lock()
        novel_file.write_text(novel_file.read_text(encoding="utf-8") + "\n　　后人有诗叹曰：卧龙先生。\n")
        r = cli("ingest.cli", "add", str(novel_file), "--no-progress", env=env)
        _assert_clean_error(r, data)
        assert "writable" in r.stderr
        r = cli("ingest.cli", "remove", str(novel_file), env=env)
        _assert_clean_error(r, data)
    # a fresh data folder under a read-only one: the folder that cannot be created is named
    with lockable_dir(tmp_path / "ro2") as lock:
        lock()
        r = cli("ingest.cli", "add", str(novel_file), "--no-progress",
                env=cli_env(tmp_path, KONGMING_DATA_DIR=str(tmp_path / "ro2" / "data")))  # fmt: skip
        _assert_clean_error(r, tmp_path / "ro2" / "data")


def test_ingest_on_a_full_disk_names_the_folder_and_finishes_once_there_is_room(tmp_path, novel_file):
    big = big_novel(novel_file, tmp_path / "big.txt")
    with tmpfs(tmp_path / "disk", "32m") as disk:
        env = cli_env(tmp_path, KONGMING_DATA_DIR=str(disk / "data"), KONGMING_EMBED_BATCH_SIZE="8",
                      KONGMING_EMBED_FLUSH="8")  # fmt: skip
        assert cli("ingest.cli", "add", str(novel_file), "--no-progress", env=env).returncode == 0
        ballast = fill(disk, leave=256 * 1024)  # the store has room for a few dozen chunks, not for `big`
        r = cli("ingest.cli", "add", str(big), "--no-progress", env=env)
        _assert_clean_error(r, disk / "data")
        assert "free some space" in r.stderr
        ballast.unlink()
        r = cli("ingest.cli", "add", str(big), "--no-progress", env=env)
        assert r.returncode == 0, r.stderr
        docs = [json.loads(line) for line in cli("ingest.cli", "list", "--json", env=env).stdout.splitlines()]
        assert sorted(d["status"] for d in docs) == ["complete", "complete"]
        rows, unique, count, committed = store_census(env)
        assert rows == unique == count == committed == sum(d["chunks"] for d in docs)  # no duplicate, no orphan
        leftovers = [p.name for p in (disk / "data").rglob("*") if ".tmp" in p.name or ".write-check" in p.name]
        assert leftovers == []


def test_serve_with_a_read_only_data_dir_fails_at_startup_naming_the_folder(tmp_path):
    with lockable_dir(tmp_path / "ro") as lock:
        (tmp_path / "ro" / "data").mkdir()
        lock()
        port = free_port()
        env = cli_env(tmp_path, KONGMING_DATA_DIR=str(tmp_path / "ro" / "data"))
        proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--no-ui", "--port", str(port)],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        try:
            deadline = time.monotonic() + 120
            while proc.poll() is None and time.monotonic() < deadline:
                try:  # up and serving: it did not refuse the folder
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).read()
                    break
                except OSError:
                    time.sleep(0.3)
            code = proc.poll()
        finally:
            if proc.poll() is None:
                proc.terminate()
            _, err = proc.communicate(timeout=30)
        assert code is not None and code != 0
        assert str(tmp_path / "ro" / "data") in err and "Traceback" not in err
