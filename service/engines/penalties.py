"""OpenAI's frequency and presence penalties for transformers' generate (vLLM has them built in)."""

from __future__ import annotations

from typing import Any


class OutputPenalty:
    """A logits processor: each token's score minus `frequency` x the times the answer has said it, minus `presence`
    if it has said it at all (OpenAI's and vLLM's meaning). Only the answer's own tokens count, the `prompt_len`
    first ones do not: unlike repetition_penalty, the prompt's end-of-turn token is never penalised, so a small
    model still stops where it would (with repetition_penalty 1.2 the persona says junk tokens instead)."""

    def __init__(self, prompt_len: int, frequency: float = 0.0, presence: float = 0.0) -> None:
        self.prompt_len = prompt_len
        self.frequency = frequency
        self.presence = presence

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        """input_ids: (batch, prompt_len + said) token ids; scores: (batch, vocab) float; returns new scores."""
        import torch

        said = input_ids[:, self.prompt_len :]
        if said.shape[1] == 0:
            return scores
        counts = torch.zeros_like(scores).scatter_add_(1, said, torch.ones_like(said, dtype=scores.dtype))
        return scores - self.frequency * counts - self.presence * (counts > 0).to(scores.dtype)
