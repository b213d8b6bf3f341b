"""Loss curves from metrics.jsonl: the PNG in the run directory and the overfitting note."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from finetune.training.runio import read_metrics
from ingest.fsio import atomic_open

log = logging.getLogger(__name__)
PLOT_FILE = "loss_curve.png"


def curves(records: list[dict[str, Any]]) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(train, validation) as (step, loss) points; a resumed run's repeated steps keep the latest record."""
    train: dict[int, float] = {}
    val: dict[int, float] = {}
    for r in records:
        if "loss" in r:
            train[int(r["step"])] = float(r["loss"])
        if "val_loss" in r:
            val[int(r["step"])] = float(r["val_loss"])
    return sorted(train.items()), sorted(val.items())


def _smoothed(points: list[tuple[int, float]], window: int) -> list[tuple[int, float]]:
    out = []
    for i in range(len(points)):
        chunk = points[max(0, i - window + 1) : i + 1]
        out.append((points[i][0], sum(v for _, v in chunk) / len(chunk)))
    return out


def overfitting_note(records: list[dict[str, Any]], tolerance: float = 0.01) -> str | None:
    """A sentence when validation loss has risen above its best while training loss kept falling."""
    train, val = curves(records)
    if len(val) < 2 or len(train) < 2:
        return None
    best_step, best = min(val, key=lambda p: p[1])
    last_step, last = val[-1]
    if last_step == best_step or last <= best * (1 + tolerance):
        return None
    smooth = dict(_smoothed(train, max(1, len(train) // 20)))
    at_best = smooth[min(smooth, key=lambda s: abs(s - best_step))]
    at_last = smooth[min(smooth, key=lambda s: abs(s - last_step))]
    if at_last >= at_best:
        return None
    return (
        f"overfitting: validation loss rose from {best:.4f} (step {best_step}) to {last:.4f} (step {last_step}) "
        f"while training loss fell from {at_best:.4f} to {at_last:.4f}; prefer the checkpoint near step "
        f"{best_step}, fewer epochs, a lower learning rate, more dropout or more data"
    )


def plot_loss_curve(run_dir: str | Path, out: str | Path | None = None) -> Path | None:
    """Draw train (raw and smoothed) and validation loss against steps; None when there is nothing to draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    train, val = curves(read_metrics(run_dir))
    if not train and not val:
        return None
    target = Path(out) if out else run_dir / PLOT_FILE
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    if train:
        ax.plot(*zip(*train, strict=True), color="tab:blue", alpha=0.3, linewidth=1, label="train")
        if len(train) >= 10:
            ax.plot(
                *zip(*_smoothed(train, max(2, len(train) // 20)), strict=True),
                color="tab:blue",
                linewidth=1.8,
                label="train (smoothed)",
            )
    if val:
        ax.plot(
            *zip(*val, strict=True), color="tab:orange", marker="o", markersize=3, linewidth=1.8, label="validation"
        )
    ax.set_xlabel("step")
    ax.set_ylabel("loss (per assistant token)")
    ax.set_title(run_dir.resolve().name)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    try:
        with atomic_open(target, "wb") as f:
            fig.savefig(f, format="png")
    finally:
        plt.close(fig)
    return target
