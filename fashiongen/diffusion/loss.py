"""The training loss: per-sample MSE with optional min-SNR-gamma weighting (Hang et al. 2023)."""

from __future__ import annotations

import torch
from torch import Tensor


def min_snr_weight(snr: Tensor, gamma: float, prediction_type: str) -> Tensor:
    """Per-sample loss weight [B] that caps the weight of low-noise steps at gamma.

    In x_0-space the weight is min(SNR, gamma); an epsilon loss already carries a factor SNR,
    a v loss a factor SNR + 1, so those are divided out. gamma <= 0 gives weight 1 (plain MSE).
    """
    if gamma <= 0:
        return torch.ones_like(snr)
    clipped = torch.minimum(snr, torch.full_like(snr, gamma))
    if prediction_type == "epsilon":
        return clipped / snr.clamp(min=1e-20)
    if prediction_type == "v_prediction":
        return clipped / (snr + 1.0)
    raise ValueError(f"unknown prediction_type '{prediction_type}'")


def diffusion_loss(prediction: Tensor, target: Tensor, snr: Tensor, prediction_type: str, snr_gamma: float) -> Tensor:
    """prediction, target [B, C, H, W]; snr [B] -> weighted MSE per sample [B] (float32)."""
    mse = (prediction.float() - target.float()).square().mean(dim=tuple(range(1, prediction.ndim)))  # [B]
    return mse * min_snr_weight(snr.float(), snr_gamma, prediction_type)
