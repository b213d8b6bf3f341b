"""Knowledge bases as OpenAI vector stores (service.py: stores and files; search.py: search, chunks, chat's view)."""

from .service import PREFIX, VectorStoreService, store_id

__all__ = ["PREFIX", "VectorStoreService", "store_id"]
