"""Exponential moving average of model weights, with the decay warming up from 0.

decay(step) = min(max_decay, 1 - (1 + step) ** -power): early weights are forgotten quickly, so the
EMA is useful after hundreds rather than tens of thousands of steps (diffusers' EMAModel schedule
with inv_gamma = 1). The EMA is a full module copy, so validation and export just use it.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def ema_decay(step: int, max_decay: float, power: float) -> float:
    """Decay applied at optimizer step `step` (1-based count of updates so far)."""
    if step <= 0:
        return 0.0
    return min(max_decay, 1.0 - (1.0 + step) ** -power)


class EMA:
    """Holds `module`, an fp32 copy of a model whose parameters track the model's by EMA."""

    def __init__(self, model: nn.Module, max_decay: float = 0.9999, power: float = 0.75) -> None:
        self.module = copy.deepcopy(model).float().eval().requires_grad_(False)
        self.max_decay = max_decay
        self.power = power

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> float:
        """ema = decay * ema + (1 - decay) * param, for every parameter; returns the decay used."""
        decay = ema_decay(step, self.max_decay, self.power)
        ema_params = list(self.module.parameters())
        params = [p.detach().float() for p in model.parameters()]
        if len(ema_params) != len(params):
            raise ValueError(f"EMA holds {len(ema_params)} parameters, the model has {len(params)}")
        torch._foreach_lerp_(ema_params, params, 1.0 - decay)
        return decay

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: p.detach().contiguous() for name, p in self.module.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state, strict=True)
