"""Libraries that log their start-up at DEBUG through a handler of their own (jieba, bm25s): every line appeared
twice, once plain and once through the application's logging. Each is configured once, on first use: warnings
and errors still reach the application's logging (once); the start-up chatter does not."""

from __future__ import annotations

import logging
from types import ModuleType

_quieted: set[str] = set()


def quiet_logger(name: str, level: int = logging.WARNING) -> None:
    """The library's own handlers removed and its level raised; call after importing it (jieba and bm25s set
    DEBUG and add a stderr handler at import)."""
    if name in _quieted:
        return
    logger = logging.getLogger(name)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    logger.setLevel(level)
    logger.propagate = True
    _quieted.add(name)


def load_jieba() -> ModuleType:
    """jieba, with its logger quiet (its dictionary load printed four lines, each twice)."""
    import jieba

    quiet_logger("jieba")
    return jieba
