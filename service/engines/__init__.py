"""Text generators behind one Protocol: an OpenAI-compatible upstream (vLLM) and in-process transformers."""

from .base import Completion, Delta, Engine, Message, SamplingParams
from .local import LocalEngine
from .upstream import OpenAICompatibleEngine

__all__ = ["Completion", "Delta", "Engine", "LocalEngine", "Message", "OpenAICompatibleEngine", "SamplingParams"]
