"""Low-rank adapters (LoRA, Hu et al. 2021) on a network's convolution and linear weights, as parametrizations:
while training, each adapted layer's weight is W + (B @ A) * alpha / rank with W frozen; for inference the deltas are
merged into the weights, so an adapted network costs exactly what the original does.

    names = add_lora(student.unet, rank=8)          # B starts at zero: the adapted network equals the original
    adapter = lora_state(student)                    # {"unet....lora_a": [r, I*k*k], "....lora_b": [O, r]}
    merge_lora(student)                              # plain weights again, deltas included

A few-step student ships as its adapter alone (a few MB beside its teacher's weights, see diffusion/student.py).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

LORA_KEYS = ("lora_a", "lora_b")


class LoRADelta(nn.Module):
    """weight -> weight + (lora_b @ lora_a) * scale, reshaped to the weight's shape (a conv's [O, I, kh, kw] too)."""

    def __init__(self, weight: Tensor, rank: int, alpha: float) -> None:
        super().__init__()
        out_features, in_features = weight.shape[0], weight[0].numel()
        self.rank = min(rank, out_features, in_features)
        self.scale = alpha / self.rank
        self.lora_a = nn.Parameter(torch.empty(self.rank, in_features, dtype=weight.dtype, device=weight.device))
        self.lora_b = nn.Parameter(torch.zeros(out_features, self.rank, dtype=weight.dtype, device=weight.device))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # as peft: B = 0 makes the start exact

    def forward(self, weight: Tensor) -> Tensor:
        return weight + (self.lora_b @ self.lora_a).view_as(weight).to(weight.dtype) * self.scale


def lora_targets(module: nn.Module) -> list[str]:
    """The layers an adapter covers: every Conv2d and Linear (in module order)."""
    return [name for name, layer in module.named_modules() if isinstance(layer, (nn.Conv2d, nn.Linear))]


def add_lora(module: nn.Module, rank: int, alpha: float | None = None) -> list[str]:
    """Freeze `module`'s own weights and give each of its Conv2d/Linear layers a trainable low-rank delta;
    returns the adapted layers' names. alpha defaults to rank (scale 1)."""
    if rank < 1:
        raise ValueError(f"LoRA rank must be at least 1, got {rank}")
    module.requires_grad_(False)
    names = lora_targets(module)
    for name in names:
        layer = module.get_submodule(name)
        parametrize.register_parametrization(layer, "weight", LoRADelta(layer.weight, rank, float(alpha or rank)))
    return names


def lora_state(module: nn.Module) -> dict[str, Tensor]:
    """Just the adapters' factors of `module`'s state_dict."""
    return {name: value for name, value in module.state_dict().items() if name.rsplit(".", 1)[-1] in LORA_KEYS}


def merge_lora(module: nn.Module) -> int:
    """Fold every adapter of `module` into its layer's weight (the parametrization removed); returns how many."""
    merged = 0
    for layer in list(module.modules()):
        if parametrize.is_parametrized(layer, "weight"):
            parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)
            merged += 1
    return merged


__all__ = ["LORA_KEYS", "LoRADelta", "add_lora", "lora_state", "lora_targets", "merge_lora"]
