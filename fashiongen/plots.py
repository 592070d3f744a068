"""Plots a person would rather look at than JSON: training curves (more plots join as evaluation lands)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt  # noqa: E402

from .utils import atomic_path  # noqa: E402


def _smooth(values: Sequence[float], window: int) -> list[float]:
    """Trailing moving average (the first points average what exists so far)."""
    out, total = [], 0.0
    for index, value in enumerate(values):
        total += value
        if index >= window:
            total -= values[index - window]
        out.append(total / min(index + 1, window))
    return out


def training_curves(records: Sequence[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Loss (raw and smoothed), validation loss and learning rate against step, from metrics.jsonl records."""
    train = [r for r in records if "loss" in r]
    val = [r for r in records if "val_loss" in r]
    figure, (loss_axis, lr_axis) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True, height_ratios=(3, 1))
    if train:
        steps, losses = [r["step"] for r in train], [r["loss"] for r in train]
        loss_axis.plot(steps, losses, color="tab:blue", alpha=0.25, linewidth=0.8, label="train loss")
        loss_axis.plot(steps, _smooth(losses, max(1, len(losses) // 20)), color="tab:blue", label="train loss (smoothed)")
        lr_axis.plot(steps, [r["lr"] for r in train], color="tab:green")
    if val:
        loss_axis.plot([r["step"] for r in val], [r["val_loss"] for r in val], "o-", color="tab:orange", label="validation loss (EMA)")
    loss_axis.set_ylabel("loss")
    loss_axis.set_yscale("log")
    loss_axis.grid(alpha=0.3)
    loss_axis.legend(loc="upper right", fontsize=8)
    loss_axis.set_title(title, fontsize=10)
    lr_axis.set_ylabel("learning rate")
    lr_axis.set_xlabel("step")
    lr_axis.grid(alpha=0.3)
    figure.tight_layout()
    path = Path(path)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=110)
    plt.close(figure)
    return path
