"""Chinese-aware chunking: split on structure (回/章 headings, Markdown headings), then on sentences."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .headings import Heading, heading_of
from .headings import cn_to_int as cn_to_int  # the chapter-number parser's public home stays here too
from .headings import parse_heading as parse_heading

# A sentence ends at 。！？；… (and their ASCII forms), with any closing quotes or brackets after them.
_SENTENCE_END = re.compile(r"[。！？!?；;…]+[”’」』》）)\]]*|\n+")
_SOFT_BREAK = re.compile(r"[，,、：:]")

LengthFn = Callable[[str], int]


@dataclass(frozen=True)
class Section:
    """A structural unit of a document: one chapter, or the text under one Markdown heading."""

    start: int  # offset of the body in the document text
    text: str
    heading: str | None = None
    chapter: int | None = None
    chapter_title: str | None = None
    chapter_unit: str | None = None  # what the chapter number counts: 回 章 话 节 卷 部 篇 集


@dataclass(frozen=True)
class Chunk:
    text: str
    start: int
    end: int
    index: int
    chapter: int | None
    chapter_title: str | None
    section: str | None
    content_hash: str
    chapter_unit: str | None = None
    overlap: int = 0  # leading characters that repeat the end of the previous chunk (of the same section)

    def metadata(self) -> dict[str, Any]:
        """Flat metadata for the vector store (None values left out: Chroma cannot filter on them)."""
        meta: dict[str, Any] = {
            "chunk_index": self.index,
            "start_char": self.start,
            "end_char": self.end,
            "content_hash": self.content_hash,
        }
        if self.chapter is not None:
            meta["chapter"] = self.chapter
            if self.chapter_unit:
                meta["chapter_unit"] = self.chapter_unit
        if self.chapter_title:
            meta["chapter_title"] = self.chapter_title
        if self.section:
            meta["section"] = self.section
        if self.overlap:
            meta["overlap"] = self.overlap
        return meta


def _split_newlines(text: str) -> list[str]:
    """Lines with their "\\n", split on "\\n" only: U+2028, U+0085 and friends are not line ends here."""
    parts = text.split("\n")
    out = [p + "\n" for p in parts[:-1]]
    if parts[-1]:
        out.append(parts[-1])
    return out


_LEVEL_RANK = {"volume": 0, "chapter": 1, "section": 2}


def _chapter_level(headings: list[Heading | None]) -> str | None:
    """Which heading level numbers the chapters: of the levels that repeat in the document, 回/章 first, else
    卷/部/篇/集, else 节; when none repeats, the same order over the levels there are."""
    counts = Counter(h.level for h in headings if h is not None and h.level in _LEVEL_RANK)
    order = ("chapter", "volume", "section")
    return next((lv for lv in order if counts[lv] >= 2), None) or next((lv for lv in order if counts[lv]), None)


def split_sections(text: str) -> list[Section]:
    """Cut a document at its headings. Sections with an empty body (a table of contents) are dropped,
    and so is a chapter that repeats an earlier one word for word.

    Chapter numbers come from one level (see `_chapter_level`): a heading below it (a 节 under a 章 or a 卷)
    keeps the number of the unit it is in, a heading above it (a 卷 over 章) has none.
    """
    lines = _split_newlines(text)
    headings = [heading_of(line) if line.strip() else None for line in lines]
    chapter_level = _chapter_level(headings)
    sections: list[Section] = []
    # heading, chapter, chapter title, chapter unit
    current: tuple[str | None, int | None, str | None, str | None] = (None, None, None, None)
    body_start = 0
    pos = 0
    seen: set[tuple[int | None, str]] = set()

    def close(end: int) -> None:
        body = text[body_start:end]
        stripped = body.strip()
        if not stripped:
            return
        key = (current[1], hashlib.sha1(stripped.encode()).hexdigest())
        if key in seen:
            return
        seen.add(key)
        lead = len(body) - len(body.lstrip())
        sections.append(Section(body_start + lead, stripped, *current))

    for line, h in zip(lines, headings, strict=True):
        if h is not None:
            close(pos)
            if h.level == chapter_level:
                current = (h.text, h.number, h.title, h.unit)
            elif chapter_level and _LEVEL_RANK.get(h.level, -1) > _LEVEL_RANK[chapter_level]:
                current = (h.text, *current[1:])
            else:
                current = (h.text, None, None, None)
            body_start = pos + len(line)
        pos += len(line)
    close(len(text))
    return sections


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Sentence spans (start, end) covering the text; newlines end a sentence too."""
    spans: list[tuple[int, int]] = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        end = m.end()
        if text[start:end].strip():
            spans.append((start, end))
        start = end
    if text[start:].strip():
        spans.append((start, len(text)))
    return spans


def _clauses(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Spans of an over-long sentence cut after each comma-like mark (，、：)."""
    spans, cur = [], start
    for m in _SOFT_BREAK.finditer(text, start, end):
        spans.append((cur, m.end()))
        cur = m.end()
    if cur < end:
        spans.append((cur, end))
    return spans


def _words(text: str, start: int, end: int, limit: int, length: LengthFn) -> list[tuple[int, int]]:
    """Spans of the jieba words of text[start:end]; a single word longer than `limit` is cut at the limit."""
    from .quiet import load_jieba

    jieba = load_jieba()
    spans: list[tuple[int, int]] = []
    for _, s, e in jieba.tokenize(text[start:end]):
        s, e = start + s, start + e
        while length(text[s:e]) > limit:
            cut = s + 1
            while cut < e and length(text[s : cut + 1]) <= limit:
                cut += 1
            spans.append((s, cut))
            s = cut
        spans.append((s, e))
    return spans


def _units(text: str, size: int, length: LengthFn) -> list[tuple[int, int]]:
    """What chunks are packed from: sentences; a sentence over `size` gives its clauses, and a clause over
    `size` (a long line without punctuation) its words, so no cut falls inside a word and overlap applies."""
    units: list[tuple[int, int]] = []
    for s, e in split_sentences(text):
        if length(text[s:e]) <= size:
            units.append((s, e))
            continue
        for cs, ce in _clauses(text, s, e):
            if length(text[cs:ce]) <= size:
                units.append((cs, ce))
            else:
                units.extend(_words(text, cs, ce, size, length))
    return units


def chunk_section(section: Section, size: int, overlap: int, length: LengthFn = len) -> list[tuple[int, int]]:
    """Pack sentences into spans (relative to the section) of about `size`, repeating up to `overlap`."""
    units = _units(section.text, size, length)
    spans: list[tuple[int, int]] = []
    cur: list[tuple[int, int]] = []
    for unit in units:
        if cur and length(section.text[cur[0][0] : unit[1]]) > size:
            spans.append((cur[0][0], cur[-1][1]))
            keep: list[tuple[int, int]] = []
            for u in reversed(cur):
                if length(section.text[u[0] : cur[-1][1]]) > overlap:
                    break
                keep.insert(0, u)
            # never let the overlap alone fill the next chunk
            while keep and length(section.text[keep[0][0] : unit[1]]) > size:
                keep.pop(0)
            cur = keep
        cur.append(unit)
    if cur:
        spans.append((cur[0][0], cur[-1][1]))
    return spans


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def chunk_document(text: str, size: int = 480, overlap: int = 60, length: LengthFn = len) -> list[Chunk]:
    """Chunks of a cleaned document with chapter metadata and offsets into `text`."""
    if overlap >= size:
        raise ValueError(f"chunk overlap ({overlap}) must be smaller than chunk size ({size})")
    chunks: list[Chunk] = []
    for section in split_sections(text):
        prev_end = -1
        for s, e in chunk_section(section, size, overlap, length):
            raw = section.text[s:e]
            lead = len(raw) - len(raw.lstrip())
            body = raw.strip()
            if not body:
                continue
            start = section.start + s + lead
            repeated = min(max(prev_end - start, 0), len(body))
            prev_end = start + len(body)
            chunks.append(
                Chunk(
                    text=body,
                    start=start,
                    end=start + len(body),
                    index=len(chunks),
                    chapter=section.chapter,
                    chapter_title=section.chapter_title,
                    section=section.heading,
                    content_hash=content_hash(body),
                    chapter_unit=section.chapter_unit,
                    overlap=repeated,
                )
            )
    return chunks


def embedding_text(text: str, metadata: dict[str, Any], with_overlap: bool = True) -> str:
    """What is embedded for a chunk: its text, or without the leading overlap that repeats the previous chunk
    (`metadata["overlap"]` characters; that text is embedded with the previous chunk already)."""
    cut = 0 if with_overlap else int(metadata.get("overlap", 0) or 0)
    rest = text[cut:].lstrip()
    return rest if cut and rest else text


def pieces(text: str, size: int) -> list[str]:
    """`text` cut into consecutive pieces of at most `size` characters, at sentence ends where one falls inside
    (a longer sentence is cut at `size`); the whole text when `size` is 0 or the text fits."""
    if size <= 0 or len(text) <= size:
        return [text]
    out: list[str] = []
    cur = ""
    for s, e in split_sentences(text):
        sentence = text[s:e]
        while len(sentence) > size:
            if cur:
                out.append(cur)
                cur = ""
            out.append(sentence[:size])
            sentence = sentence[size:]
        if cur and len(cur) + len(sentence) > size:
            out.append(cur)
            cur = ""
        cur += sentence
    if cur.strip():
        out.append(cur)
    return [p for p in out if p.strip()] or [text]


@dataclass
class ChunkNode:
    """One chunk of a document as a node, before LlamaIndex: what the keyword phase stages (text and flat metadata,
    no vector) and what becomes a `TextNode` when it is embedded (`to_text_node`). Building these imports nothing
    from llama_index (its package import costs about 2 s, most of the time to keyword-searchable)."""

    node_id: str  # content-addressed: chunk_node_id
    text: str
    metadata: dict[str, Any]  # the document's (doc_id, source, doc_title) and the chunk's (Chunk.metadata)


def chunk_nodes(
    doc_id: str, text: str, doc_metadata: dict[str, Any], size: int = 480, overlap: int = 60, length: LengthFn = len
) -> list[ChunkNode]:
    """The chunks of one document as nodes, in document order; identical chunks (a repeated chapter) keep one."""
    unique: dict[str, ChunkNode] = {}
    for chunk in chunk_document(text, size, overlap, length):
        node_id = chunk_node_id(doc_id, chunk)
        unique.setdefault(node_id, ChunkNode(node_id, chunk.text, {**doc_metadata, **chunk.metadata()}))
    return list(unique.values())


def to_text_node(node_id: str, text: str, metadata: dict[str, Any], source: Any = None) -> Any:
    """A LlamaIndex TextNode of a chunk; its SOURCE is `source` (a RelatedNodeInfo) or the document named by the
    metadata's doc_id. Metadata is for filters and citations: none of it goes into the embedded or LLM text."""
    from llama_index.core.schema import NodeRelationship, ObjectType, RelatedNodeInfo, TextNode

    start, end = metadata.get("start_char"), metadata.get("end_char")
    metadata = dict(sorted(metadata.items()))  # one serialized form, whether built here or read back from Chroma
    node = TextNode(
        id_=node_id,
        text=text,
        metadata=metadata,
        start_char_idx=int(start) if start is not None else None,
        end_char_idx=int(end) if end is not None else None,
        excluded_embed_metadata_keys=list(metadata),
        excluded_llm_metadata_keys=list(metadata),
    )
    if source is None:
        source = RelatedNodeInfo(node_id=str(metadata.get("doc_id", "")), node_type=ObjectType.DOCUMENT)
    node.relationships[NodeRelationship.SOURCE] = source
    return node


def make_splitter(size: int = 480, overlap: int = 60, length: LengthFn = len) -> Any:
    """A LlamaIndex NodeParser over `chunk_document`, for use in IngestionPipeline and friends."""
    from llama_index.core.node_parser import NodeParser
    from llama_index.core.schema import BaseNode

    class ChineseChapterSplitter(NodeParser):
        """Chapter-aware, sentence-bounded chunking for Chinese text."""

        chunk_size: int = size
        chunk_overlap: int = overlap

        def _parse_nodes(self, nodes: Sequence[BaseNode], show_progress: bool = False, **kwargs: Any) -> list[BaseNode]:
            out: list[BaseNode] = []
            for node in nodes:
                source = node.as_related_node_info()  # hashes the whole document: once, not once per chunk
                for chunk in chunk_document(node.get_content(), self.chunk_size, self.chunk_overlap, length):
                    meta = {**node.metadata, **chunk.metadata()}
                    node_id = chunk_node_id(node.node_id, chunk)
                    out.append(to_text_node(node_id, chunk.text, meta, source.model_copy()))
            return out

    return ChineseChapterSplitter(include_prev_next_rel=False)


def chunk_node_id(doc_id: str, chunk: Chunk) -> str:
    """Content-addressed chunk id: unchanged chunks of a changed document keep their id (no re-embedding)."""
    key = f"{doc_id}\x00{chunk.chapter}\x00{chunk.section}\x00{chunk.text}"
    return f"{doc_id}:{hashlib.sha256(key.encode('utf-8')).hexdigest()[:20]}"
