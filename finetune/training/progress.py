"""What a training run shows while it goes: a tqdm bar on a terminal, one log line per step anywhere else."""

from __future__ import annotations

import sys
import time
from typing import Any


def duration(seconds: float) -> str:
    """`42s`, `3m05s` or `1h02m`: an ETA a person reads at a glance."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class TrainProgress:
    """Step, loss, learning rate, tokens/s and ETA after each optimizer step.

    On a terminal a tqdm bar (its postfix carries the figures); otherwise (a log file, a pipe, a job worker's
    captured output) one line per step such as
    `step 12/300 (4%) loss 2.3410 lr 2.00e-04 1830 tokens/s eta 8m47s`. The ETA is the mean time per step of this
    call (evaluations and checkpoints included) times the steps left.
    """

    def __init__(self, total: int, done: int, stream: Any = None, enabled: bool = True) -> None:
        self.total, self.start_step = total, done
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.started = time.monotonic()
        self.bar: Any = None
        if enabled and getattr(self.stream, "isatty", lambda: False)():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, desc="train", unit="step", dynamic_ncols=True, file=self.stream)

    def eta(self, step: int) -> float | None:
        """Seconds left at `step`; None before the first step of this call."""
        ran = step - self.start_step
        if ran <= 0:
            return None
        return (time.monotonic() - self.started) / ran * (self.total - step)

    def update(self, step: int, loss: float, lr: float, tokens_per_s: float) -> None:
        if not self.enabled:
            return
        eta = self.eta(step)
        left = duration(eta) if eta is not None else "?"
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{tokens_per_s:.0f}", refresh=False)
            return
        pct = 100 * step // max(self.total, 1)
        self.stream.write(f"step {step}/{self.total} ({pct}%) loss {loss:.4f} lr {lr:.2e} "
                          f"{tokens_per_s:.0f} tokens/s eta {left}\n")
        self.stream.flush()

    def note(self, text: str) -> None:
        """A line between steps (validation loss, a checkpoint) that does not break the bar."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
