"""Text generators behind one Protocol: an OpenAI-compatible upstream (vLLM) and in-process transformers."""

from .adapters import AdapterEngine
from .base import Completion, Delta, Engine, Message, SamplingParams, text_turns
from .local import LocalEngine
from .upstream import OpenAICompatibleEngine

__all__ = [
    "AdapterEngine", "Completion", "Delta", "Engine", "LocalEngine", "Message", "OpenAICompatibleEngine",
    "SamplingParams", "text_turns",
]  # fmt: skip
