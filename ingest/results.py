"""What a search is asked (Filters) and what it gives back (RetrievedChunk); ingest.retrieval searches."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Filters:
    """Restrict a search to some documents and/or a chapter range (inclusive)."""

    doc_ids: list[str] | None = None
    chapter_min: int | None = None
    chapter_max: int | None = None

    def chroma(self) -> Any:
        from llama_index.core.vector_stores.types import FilterOperator, MetadataFilter, MetadataFilters

        parts = []
        if self.doc_ids:
            parts.append(MetadataFilter(key="doc_id", value=list(self.doc_ids), operator=FilterOperator.IN))
        if self.chapter_min is not None:
            parts.append(MetadataFilter(key="chapter", value=self.chapter_min, operator=FilterOperator.GTE))
        if self.chapter_max is not None:
            parts.append(MetadataFilter(key="chapter", value=self.chapter_max, operator=FilterOperator.LTE))
        return MetadataFilters(filters=parts) if parts else None  # type: ignore[arg-type]


@dataclass
class RetrievedChunk:
    chunk_id: str
    text: str
    metadata: dict[str, Any]
    score: float
    scores: dict[str, float] = field(default_factory=dict)

    @property
    def chapter(self) -> int | None:
        c = self.metadata.get("chapter")
        return int(c) if c is not None else None
