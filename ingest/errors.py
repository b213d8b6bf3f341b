"""Domain errors of the knowledge base; CLIs and the service map them to exit codes and HTTP errors."""

from __future__ import annotations

from pathlib import Path


class IngestError(Exception):
    """Base class: a problem the user can act on; the message says what and how."""


class UnreadableFileError(IngestError):
    """A file that cannot be turned into text (empty, binary, undecodable, corrupt)."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class EmbeddingMismatchError(IngestError):
    """The collection was built with another embedding model than the one configured."""


class StoreError(IngestError):
    """The vector store cannot be reached or written."""


class UnknownDocumentError(IngestError):
    """`remove` was given a path or id that names no document of the collection."""
