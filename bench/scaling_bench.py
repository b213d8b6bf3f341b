"""Benchmark: how ingest, the store, the keyword index and retrieval cost grow with the corpus.

Sizes are multiples of 三国演义 (~600k characters): 1x is the novel; 5x the four novels of ../shared/data/corpus;
10x those plus one synthetic variant of each (chapters shuffled with a seed, every mined person's name replaced by
a made-up one: text the embedder has not seen, not a copy that deduplicates away). Vectors come from a stand-in
embedder (character-bigram hashing into 384 dimensions, microseconds per chunk) so that the store, the keyword index
and the query path are what is measured; the real embedder's cost is linear in characters (bench/ingest_bench.py).

    nice -n 10 python bench/scaling_bench.py --sizes 1 5 10 --work /tmp/kongming-scale \\
        --out bench/results/scaling.json --plot docs/scaling.png

Each size runs in fresh child processes: one ingests (peak RSS of ingest), one reads (start time, query
latency, peak RSS of a reader, keyword index rebuild, the cost of adding and removing one document and of ten
small documents added one at a time, and the largest merge of keyword segments there can be). The reader is a
`Retriever` (what the service holds per knowledge base), not the service: bench/serve_bench.py measures the
`kongming serve` process itself over the stores this script leaves (start to its first correct answer, its RSS).

Replot from result files, with serve_bench's service RSS beside the reader's (rows matched by size):

    python bench/scaling_bench.py --from bench/results/scaling-groups.json --service bench/results/serve_1x.json \\
        bench/results/serve_10x.json bench/results/serve_50x.json --plot docs/scaling.png
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import random
import re
import resource
import shutil
import subprocess
import sys
import time
import zlib
from datetime import date
from pathlib import Path

import numpy as np
from common import pct, write_result

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "corpus"
NOVELS = ["sanguo_yanyi.txt", "hongloumeng.txt", "shuihuzhuan.txt", "xiyouji.txt"]
_CHAPTER = re.compile(r"(?m)^[ \t\u3000]*(?:正文\s*)?第[零〇一二两三四五六七八九十百千0-9]+[回章]")
_SURNAMES = "赵钱孙李周吴郑王冯陈褚卫蒋沈韩杨朱秦尤许何吕施张孔曹严华金魏陶姜戚谢邹喻柏水窦章云苏潘葛奚范彭"
_SURNAME_SET = set(
    "赵钱孙李周吴郑王冯陈褚卫蒋沈韩杨朱秦许何吕施张孔曹严华金魏陶姜谢邹柏窦章云苏潘葛范彭鲁韦马方袁柳史唐薛雷贺"
    "罗郝常傅齐顾孟黄穆萧姚邵毛狄戴宋庞纪董梁杜贾郭林徐高夏蔡田胡霍邓崔陆荀甘刘龙叶司诸关夏侯孙沙猪唐晁吴卢"
)
_HAN = re.compile(r"[\u4e00-\u9fff]+")
_GIVEN = "安柏澄丹恩帆光海衡鸿杰靖凯岚朗霖茂宁鹏谦睿韶霆维熙煦宣彦峥卓梓岳彬辰聪笛萼芳珂"


class HashingEmbedder:
    """Stand-in embedder for size tests: character bigrams hashed (crc32) into 384 signed buckets, L2-normalised.
    Stable across processes; no model; not a retrieval-quality figure. Its name is the one the service derives
    from KONGMING_EMBED_MODEL=bench-hashing-bigram-384 (serve_bench.py serves its stores under that setting)."""

    name, dim = "st/bench-hashing-bigram-384", 384

    def token_count(self, text: str) -> int:  # the extractive answerer counts usage with the embedder: a token a char
        return len(text)

    def _embed(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, t in enumerate(texts):
            for i in range(len(t) - 1):
                h = zlib.crc32(t[i : i + 2].encode())
                out[row, h % self.dim] += 1.0 if h & 0x100000 else -1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1.0, norms)

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        return self._embed(list(texts))

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        return self._embed(list(texts))


def variant(text: str, seed: int, names: int = 150) -> str:
    """The novel with its chapters shuffled and its people renamed: the mined names (姓X名Y, 字Z) and the most
    frequent two- and three-character strings that open with a surname (a heuristic for the novel's people)
    become made-up names of the same length."""
    from collections import Counter

    from ingest.aliases import mine_aliases

    rng = random.Random(seed)
    starts = [m.start() for m in _CHAPTER.finditer(text)]
    if len(starts) < 5:  # no chapter headings found: paragraphs in 40 blocks
        step = max(1, len(text) // 40)
        starts = sorted({text.find("\n", i) + 1 for i in range(0, len(text), step)} - {0})
    bounds = [0, *starts, len(text)]
    parts = [text[a:b] for a, b in itertools.pairwise(bounds) if b > a]
    head, body = parts[0], parts[1:]
    rng.shuffle(body)
    out = head + "".join(body)
    found = {n for g in mine_aliases(text) for n in g if len(n) >= 2}
    for n in (2, 3):
        grams = Counter(m for m in (text[i : i + n] for i in range(len(text) - n)) if m[0] in _SURNAME_SET
                        and _HAN.fullmatch(m))  # fmt: skip
        found |= {g for g, _ in grams.most_common(names)}
    order = sorted(found, key=len, reverse=True)
    mapping = {n: rng.choice(_SURNAMES) + "".join(rng.choice(_GIVEN) for _ in range(len(n) - 1)) for n in order}
    if mapping:
        out = re.sub("|".join(map(re.escape, order)), lambda m: mapping[m.group(0)], out)
    return out


def make_corpus(size: int, folder: Path) -> list[Path]:
    """Files making about `size` times 三国演义."""
    folder.mkdir(parents=True, exist_ok=True)
    base = [CORPUS / n for n in NOVELS]
    texts = [(p.stem, p.read_text(encoding="utf-8")) for p in base]
    if size == 1:
        texts = texts[:1]
    seed = 0
    while sum(len(t) for _, t in texts) < 0.95 * size * len(texts[0][1]) and size > 1:
        stem, text = texts[seed % len(NOVELS)]
        texts.append((f"{stem}-v{seed}", variant(text, seed)))
        seed += 1
    files = []
    for stem, text in texts:
        f = folder / f"{stem}.txt"
        if not f.exists():
            f.write_text(text, encoding="utf-8")
        files.append(f)
    return files


def _settings(data_dir: Path):  # type: ignore[no-untyped-def]
    from ingest.settings import get_settings

    return get_settings(data_dir=data_dir, collection="scale", mine_entities=False)


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Clock:
    """Wall and CPU seconds of a block (CPU: this process, all its threads; it does not grow with other
    processes' load, which on a shared machine inflates the wall figure)."""

    def __enter__(self) -> Clock:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        self.cpu_start = self.cpu
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def child_ingest(folder: Path, data_dir: Path) -> dict:
    from ingest import pipeline

    shutil.rmtree(data_dir, ignore_errors=True)
    marks: dict[str, float] = {}
    with Clock() as c:
        s = pipeline.add_paths([folder], _settings(data_dir), embedder=HashingEmbedder(),
                               on_searchable=lambda _: marks.setdefault("cpu", time.process_time()))  # fmt: skip
    return {"chunks": s.chunks_added, "ingest_seconds": c.wall, "ingest_cpu_seconds": c.cpu,
            "searchable_seconds": s.searchable_seconds, "searchable_cpu_seconds": marks["cpu"] - c.cpu_start,
            "ingest_peak_rss_mib": _rss_mib()}  # fmt: skip


def child_serve(data_dir: Path, questions: Path, extra: Path) -> dict:
    import tempfile

    from ingest import pipeline
    from ingest.bm25 import merge
    from ingest.evaluation import load_questions
    from ingest.kb import visible_state
    from ingest.keyword import KeywordIndex
    from ingest.retrieval import Retriever

    settings = _settings(data_dir)
    qs = [q.question for q in load_questions(questions)]
    with Clock() as start:
        r = Retriever(settings, embedder=HashingEmbedder(), refresh_seconds=3600)
        r.retrieve(qs[0], 5)
    lat: dict[str, list[float]] = {"dense": [], "keyword": [], "hybrid": []}
    cpu: dict[str, list[float]] = {m: [] for m in lat}
    for q in qs:
        for mode, xs in lat.items():
            with Clock() as c:
                r.retrieve(q, 5, mode=mode)  # type: ignore[arg-type]
            xs.append(c.wall * 1000)
            cpu[mode].append(c.cpu * 1000)
    serve_rss = _rss_mib()
    _, ids, fp = visible_state(r.store)
    with tempfile.TemporaryDirectory() as tmp, Clock() as build:
        KeywordIndex(Path(tmp), settings.keyword_tokenizer).build(fp, ids, r.store.get_chunks)
    refresh = _time_refreshes()
    with Clock() as one:
        pipeline.add_paths([extra], settings, embedder=HashingEmbedder(), embed=False)
    added = dict(refresh)
    with Clock() as follow:
        r._refresh(now=True)  # the reader follows: loads the segment the writer saved
        r.retrieve(qs[0], 5)
    refresh.update(wall=0.0, cpu=0.0)
    with Clock() as gone:
        pipeline.remove_documents([str(extra)], settings)
    removed = dict(refresh)
    with Clock() as follow_gone:
        r._refresh(now=True)
        r.retrieve(qs[0], 5)
    adds = []  # one small document at a time: the tenth add merges ten small segments
    for f in sorted(extra.parent.glob("more_*.txt")):
        refresh.update(wall=0.0, cpu=0.0)
        pipeline.add_paths([f], settings, embedder=HashingEmbedder(), embed=False)
        adds.append(refresh["wall"])
    r._refresh(now=True)
    assert r._index.bm25 is not None
    segments = [s.live for s in r._index.bm25.segments]
    with Clock() as worst:  # the largest merge there can be: every row into one segment (in memory)
        merge("bench", r._index.bm25.segments)
    return {
        "serve_start_seconds": start.wall,
        "serve_start_cpu_seconds": start.cpu,
        "serve_peak_rss_mib": serve_rss,
        **{f"{m}_p50_ms": float(np.median(xs)) for m, xs in lat.items()},
        **{f"{m}_p95_ms": pct(xs, 0.95) for m, xs in lat.items()},
        **{f"{m}_cpu_p50_ms": float(np.median(xs)) for m, xs in cpu.items()},
        **{f"{m}_cpu_p95_ms": pct(xs, 0.95) for m, xs in cpu.items()},
        "keyword_build_seconds": build.wall,
        "keyword_build_cpu_seconds": build.cpu,
        "one_doc_searchable_seconds": one.wall,
        "one_doc_searchable_cpu_seconds": one.cpu,
        "keyword_refresh_add_seconds": added["wall"],
        "keyword_refresh_add_cpu_seconds": added["cpu"],
        "reader_follow_seconds": follow.wall,
        "reader_follow_cpu_seconds": follow.cpu,
        "remove_one_doc_seconds": gone.wall,
        "remove_one_doc_cpu_seconds": gone.cpu,
        "keyword_refresh_remove_seconds": removed["wall"],
        "keyword_refresh_remove_cpu_seconds": removed["cpu"],
        "reader_follow_remove_seconds": follow_gone.wall,
        "reader_follow_remove_cpu_seconds": follow_gone.cpu,
        "keyword_refresh_seq_adds_seconds": adds,
        "keyword_segments_live_rows": segments,
        "keyword_merge_all_seconds": worst.wall,
        "keyword_merge_all_cpu_seconds": worst.cpu,
    }


def _time_refreshes() -> dict[str, float]:
    """Wall and CPU seconds ingest spends in `refresh_keyword_index` (visible chunk set, then the keyword index
    brought to it), summed from now on: wraps the pipeline's and the groups' references to it (bench only)."""
    from ingest import groups, pipeline

    spent = {"wall": 0.0, "cpu": 0.0}
    inner = pipeline.refresh_keyword_index

    def timed(*args, **kwargs):  # type: ignore[no-untyped-def]
        with Clock() as c:
            out = inner(*args, **kwargs)
        spent["wall"] += c.wall
        spent["cpu"] += c.cpu
        return out

    pipeline.refresh_keyword_index = groups.refresh_keyword_index = timed  # type: ignore[assignment]
    return spent


def _du_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def _child(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"child {args[:2]} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_size(size: int, work: Path, questions: Path) -> dict:
    folder, data_dir = work / f"corpus-{size}x", work / f"data-{size}x"
    files = make_corpus(size, folder)
    extra = work / "extra" / "one_chapter.txt"
    extra.parent.mkdir(parents=True, exist_ok=True)
    novel = (CORPUS / NOVELS[0]).read_text(encoding="utf-8")
    extra.write_text(variant(novel[:6000], 99), encoding="utf-8")
    for k in range(1, 11):  # ten more small documents, added one at a time
        (extra.parent / f"more_{k:02d}.txt").write_text(variant(novel[6000 * k : 6000 * k + 3000], 99 + k), "utf-8")
    chars = sum(len(f.read_text(encoding="utf-8")) for f in files)
    row: dict = {"size": f"{size}x", "files": len(files), "chars": chars}
    row |= _child("--child", "ingest", str(folder), str(data_dir))
    row["ingest_s_per_1000_chunks"] = row["ingest_seconds"] / row["chunks"] * 1000
    row["store_mib"] = _du_mib(data_dir / "store")
    row["keyword_mib"] = _du_mib(data_dir / "keyword")
    row |= _child("--child", "serve", str(data_dir), str(questions), str(extra))
    print(json.dumps(row), file=sys.stderr, flush=True)
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r["chunks"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for key, label in (("hybrid_cpu_p95_ms", "hybrid p95"), ("dense_cpu_p95_ms", "dense p95"),
                       ("keyword_cpu_p95_ms", "keyword p95")):  # fmt: skip
        axes[0].plot(x, [r[key] for r in rows], marker="o", label=label)
    axes[0].axhline(100, color="grey", ls="--", lw=0.8)
    axes[0].set(title="query CPU time (ms)", xlabel="chunks")
    for key, label in (("keyword_build_cpu_seconds", "keyword index full build"),
                       ("one_doc_searchable_cpu_seconds", "add one document: searchable"),
                       ("keyword_refresh_add_cpu_seconds", "keyword refresh: add one document"),
                       ("keyword_refresh_remove_cpu_seconds", "keyword refresh: remove one document"),
                       ("serve_start_cpu_seconds", "reader start")):  # fmt: skip
        axes[1].plot(x, [r.get(key, np.nan) for r in rows], marker="o", label=label)
    axes[1].axhline(1, color="grey", ls="--", lw=0.8)
    axes[1].set(title="CPU seconds", xlabel="chunks", yscale="log")
    for key, label in (("ingest_peak_rss_mib", "ingest peak RSS"), ("serve_peak_rss_mib", "reader peak RSS"),
                       ("service_peak_rss_mib", "kongming serve peak RSS"),
                       ("store_mib", "Chroma on disk"), ("keyword_mib", "keyword index on disk")):  # fmt: skip
        axes[2].plot(x, [r.get(key, np.nan) for r in rows], marker="o", label=label)
    axes[2].set(title="MiB", xlabel="chunks")
    for ax in axes:
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle("kongming scaling (stand-in hashing embedder; 1x = 三国演义)".replace("三国演义", "Sanguo"))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        kind, args = sys.argv[2], [Path(a) for a in sys.argv[3:]]
        result = child_ingest(*args) if kind == "ingest" else child_serve(*args)
        print(json.dumps(result))
        return 0
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[1, 5, 10])
    p.add_argument("--work", type=Path, default=Path("/tmp/kongming-scale"))
    p.add_argument("--questions", type=Path, default=Path("eval/sanguo_dev.jsonl"))
    p.add_argument("--out", type=Path)
    p.add_argument("--plot", type=Path)
    p.add_argument("--from", dest="results", type=Path, nargs="+", help="plot these results' rows (no run)")
    p.add_argument("--service", type=Path, nargs="*", default=[], help="serve_bench.py results to plot beside them")
    args = p.parse_args()
    if args.results:
        rows = [r for f in args.results for r in json.loads(f.read_text())["rows"]]
        service = {(r := json.loads(f.read_text())["row"])["label"].split()[0]: r for f in args.service}
        for r in rows:
            if r["size"] in service:
                r["service_peak_rss_mib"] = service[r["size"]]["peak_rss_mib"]
        if args.plot:
            plot(rows, args.plot)
        return 0
    rows = [run_size(n, args.work, args.questions) for n in args.sizes]
    if args.plot:
        plot(rows, args.plot)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}"
    result = {"date": date.today().isoformat(), "machine": machine, "embedder": HashingEmbedder.name, "rows": rows}
    write_result(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
