"""Chinese-aware chunking: split on structure (回/章 headings, Markdown headings), then on sentences."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

_CN_DIGITS = {
    "零": 0,
    "〇": 0,
    "一": 1,
    "二": 2,
    "两": 2,
    "三": 3,
    "四": 4,
    "五": 5,
    "六": 6,
    "七": 7,
    "八": 8,
    "九": 9,
}
_CN_UNITS = {"十": 10, "百": 100, "千": 1000, "万": 10000}
_CN_NUM = "0-9零〇一二两三四五六七八九十百千"
CHAPTER_HEADING = re.compile(rf"^第([{_CN_NUM}]+)([回章节卷])(?:[\s:：.、]+(.*))?$")
_MD_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*$")
# A sentence ends at 。！？；… (and their ASCII forms), with any closing quotes or brackets after them.
_SENTENCE_END = re.compile(r"[。！？!?；;…]+[”’」』》）)\]]*|\n+")
_SOFT_BREAK = re.compile(r"[，,、：:]")

LengthFn = Callable[[str], int]


def cn_to_int(s: str) -> int | None:
    """Parse a chapter number written in digits or Chinese numerals ("一百二十" -> 120, "第035" -> 35)."""
    if s.isdigit():
        return int(s)
    total, section, digit = 0, 0, None
    for ch in s:
        if ch in _CN_DIGITS:
            digit = _CN_DIGITS[ch]
        elif ch in _CN_UNITS:
            unit = _CN_UNITS[ch]
            if unit == 10000:
                total += (section + (digit or 0)) * unit
                section = 0
            else:
                section += (1 if digit is None else digit) * unit
            digit = None
        else:
            return None
    return total + section + (digit or 0)


@dataclass(frozen=True)
class Section:
    """A structural unit of a document: one chapter, or the text under one Markdown heading."""

    start: int  # offset of the body in the document text
    text: str
    heading: str | None = None
    chapter: int | None = None
    chapter_title: str | None = None


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
        if self.chapter_title:
            meta["chapter_title"] = self.chapter_title
        if self.section:
            meta["section"] = self.section
        return meta


def parse_heading(line: str) -> tuple[str, int | None, str | None] | None:
    """(heading text, chapter number, chapter title) when the line is a heading, else None."""
    s = line.strip()
    md = _MD_HEADING.match(s)
    if md:
        s = md.group(2).strip()
    elif len(s) > 60:
        return None
    m = CHAPTER_HEADING.match(s)
    if m:
        return s, cn_to_int(m.group(1)), (m.group(3) or "").strip() or None
    if md:
        return s, None, None
    return None


def split_sections(text: str) -> list[Section]:
    """Cut a document at its headings. Sections with an empty body (a table of contents) are dropped,
    and so is a chapter that repeats an earlier one word for word."""
    sections: list[Section] = []
    heading: tuple[str, int | None, str | None] | None = None
    body_start = 0
    pos = 0
    seen: set[tuple[int | None, str]] = set()

    def close(end: int) -> None:
        body = text[body_start:end]
        stripped = body.strip()
        if not stripped:
            return
        chapter = heading[1] if heading else None
        key = (chapter, hashlib.sha1(stripped.encode()).hexdigest())
        if key in seen:
            return
        seen.add(key)
        lead = len(body) - len(body.lstrip())
        sections.append(
            Section(
                start=body_start + lead,
                text=stripped,
                heading=heading[0] if heading else None,
                chapter=chapter,
                chapter_title=heading[2] if heading else None,
            )
        )

    for line in text.splitlines(keepends=True):
        parsed = parse_heading(line) if line.strip() else None
        if parsed:
            close(pos)
            heading = parsed
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


def _split_long(text: str, start: int, end: int, limit: int, length: LengthFn) -> list[tuple[int, int]]:
    """Split one over-long sentence at commas, and at a hard limit only where there is no comma."""
    pieces: list[tuple[int, int]] = []
    cur = start
    last_soft = None
    i = start
    while i < end:
        if _SOFT_BREAK.match(text, i):
            last_soft = i + 1
        if length(text[cur : i + 1]) > limit:
            cut = last_soft if last_soft and last_soft > cur else i
            pieces.append((cur, cut))
            cur = cut
            last_soft = None
        i += 1
    if cur < end:
        pieces.append((cur, end))
    return pieces


def chunk_section(section: Section, size: int, overlap: int, length: LengthFn = len) -> list[tuple[int, int]]:
    """Pack sentences into spans (relative to the section) of about `size`, repeating up to `overlap`."""
    units: list[tuple[int, int]] = []
    for s, e in split_sentences(section.text):
        if length(section.text[s:e]) > size:
            units.extend(_split_long(section.text, s, e, size, length))
        else:
            units.append((s, e))
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
        for s, e in chunk_section(section, size, overlap, length):
            raw = section.text[s:e]
            lead = len(raw) - len(raw.lstrip())
            body = raw.strip()
            if not body:
                continue
            start = section.start + s + lead
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
                )
            )
    return chunks


def make_splitter(size: int = 480, overlap: int = 60, length: LengthFn = len) -> Any:
    """A LlamaIndex NodeParser over `chunk_document`, for use in IngestionPipeline and friends."""
    from llama_index.core.node_parser import NodeParser
    from llama_index.core.schema import BaseNode, NodeRelationship, TextNode

    class ChineseChapterSplitter(NodeParser):
        """Chapter-aware, sentence-bounded chunking for Chinese text."""

        chunk_size: int = size
        chunk_overlap: int = overlap

        def _parse_nodes(self, nodes: Sequence[BaseNode], show_progress: bool = False, **kwargs: Any) -> list[BaseNode]:
            out: list[BaseNode] = []
            for node in nodes:
                doc_text = node.get_content()
                for chunk in chunk_document(doc_text, self.chunk_size, self.chunk_overlap, length):
                    meta = {**node.metadata, **chunk.metadata()}
                    tn = TextNode(
                        id_=chunk_node_id(node.node_id, chunk),
                        text=chunk.text,
                        metadata=meta,
                        start_char_idx=chunk.start,
                        end_char_idx=chunk.end,
                        # metadata is for filters and citations, not for the embedded text
                        excluded_embed_metadata_keys=list(meta),
                        excluded_llm_metadata_keys=list(meta),
                    )
                    tn.relationships[NodeRelationship.SOURCE] = node.as_related_node_info()
                    out.append(tn)
            return out

    return ChineseChapterSplitter(include_prev_next_rel=False)


def chunk_node_id(doc_id: str, chunk: Chunk) -> str:
    """Content-addressed chunk id: unchanged chunks of a changed document keep their id (no re-embedding)."""
    key = f"{doc_id}\x00{chunk.chapter}\x00{chunk.section}\x00{chunk.text}"
    return f"{doc_id}:{hashlib.sha256(key.encode('utf-8')).hexdigest()[:20]}"
