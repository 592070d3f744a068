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


def _save(figure: Any, path: str | Path) -> Path:
    """The figure as a PNG, written atomically, and closed."""
    figure.tight_layout()
    path = Path(path)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=110)
    plt.close(figure)
    return path


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
    return _save(figure, path)


def gan_curves(records: Sequence[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """A GAN run's metrics.jsonl against step: D and G losses, D's accuracy on real, generated and mismatched pairs,
    the batch diversity (and the EMA generator's at validation), and the matching-aware penalty."""
    train = [r for r in records if "d_loss" in r]
    val = [r for r in records if "diversity_ema" in r]
    figure, axes = plt.subplots(4, 1, figsize=(7, 8.5), sharex=True, height_ratios=(3, 2, 2, 1.3))
    steps = [r["step"] for r in train]
    window = max(1, len(train) // 20)
    for key, colour in (("d_loss", "tab:red"), ("g_loss", "tab:blue")):
        values = [r[key] for r in train]
        axes[0].plot(steps, values, color=colour, alpha=0.2, linewidth=0.8)
        axes[0].plot(steps, _smooth(values, window), color=colour, label=f"{key[0].upper()} loss (smoothed)")
    for key, colour, label in (("d_real_acc", "tab:green", "D right on real"), ("d_fake_acc", "tab:purple", "D right on generated"),
                               ("d_mismatched_acc", "tab:orange", "D right on mismatched captions")):
        points = [(r["step"], r[key]) for r in train if key in r]
        if points:
            axes[1].plot([p[0] for p in points], _smooth([p[1] for p in points], window), color=colour, label=label)
    axes[2].plot(steps, _smooth([r["diversity"] for r in train], window), color="tab:brown", label="batch diversity (G)")
    if val:
        axes[2].plot([r["step"] for r in val], [r["diversity_ema"] / 127.5 for r in val], "o-", color="tab:olive",
                     label="validation grid diversity (EMA G)")  # its images are 0-255; the batch's are in [-1, 1]
    axes[3].plot(steps, _smooth([r.get("ma_gp", 0.0) for r in train], window), color="tab:gray", label="MA-GP")
    for axis, label in zip(axes, ("loss", "accuracy", "diversity", "penalty")):
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        axis.legend(loc="upper right", fontsize=7)
    axes[1].set_ylim(0, 1)
    axes[0].set_title(title, fontsize=10)
    axes[-1].set_xlabel("step")
    return _save(figure, path)

def upsampler_curves(records: Sequence[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """An upsampler run's metrics.jsonl against step: the L1 loss, training-batch PSNR beside the validation photos'
    PSNR (and bicubic's, the floor to beat), and, once the discriminator has joined, its losses and accuracies."""
    train = [r for r in records if "l1" in r]
    val = [r for r in records if "val_psnr" in r]
    adversarial = [r for r in train if "d_loss" in r]
    figure, axes = plt.subplots(3, 1, figsize=(7, 7.5), sharex=True, height_ratios=(2, 2, 2))
    steps = [r["step"] for r in train]
    window = max(1, len(train) // 20)
    values = [r["l1"] for r in train]
    axes[0].plot(steps, values, color="tab:blue", alpha=0.2, linewidth=0.8)
    axes[0].plot(steps, _smooth(values, window), color="tab:blue", label="L1 (smoothed)")
    axes[1].plot(steps, _smooth([r["psnr"] for r in train], window), color="tab:blue", label="training patches")
    if val:
        axes[1].plot([r["step"] for r in val], [r["val_psnr"] for r in val], "o-", color="tab:green", label="validation photos")
        axes[1].plot([r["step"] for r in val], [r["val_psnr_bicubic"] for r in val], "--", color="tab:gray",
                     label="validation photos, bicubic")
    if adversarial:
        a_steps = [r["step"] for r in adversarial]
        for key, colour, label in (("d_loss", "tab:red", "D loss"), ("g_adv", "tab:purple", "G adversarial"),
                                   ("d_real_acc", "tab:green", "D right on photos"), ("d_fake_acc", "tab:orange", "D right on outputs")):
            axes[2].plot(a_steps, _smooth([r[key] for r in adversarial], window), color=colour, label=label)
    for axis, label in zip(axes, ("L1", "PSNR (dB)", "discriminator")):
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        if axis.lines:
            axis.legend(loc="upper right", fontsize=7)
    axes[0].set_title(title, fontsize=10)
    axes[-1].set_xlabel("step")
    return _save(figure, path)

