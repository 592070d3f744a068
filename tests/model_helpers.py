"""Tiny UNets and hand-made caption encodings for model and diffusion tests (no text encoder needed)."""

from __future__ import annotations

import torch

from fashiongen.models import FashionUNet, UNetSpec
from fashiongen.text import TextEncoding

TEXT_DIM = 16
TINY = UNetSpec((8, 16), layers_per_block=1, head_channels=8, native_resolution=32, norm_num_groups=4)


def tiny_model(spec: UNetSpec = TINY, size: int = 32, seed: int = 0, **kwargs) -> FashionUNet:
    torch.manual_seed(seed)
    return FashionUNet(spec, size, TEXT_DIM, **kwargs).eval()


def make_text(batch: int = 2, length: int = 5, real: int = 3, seed: int = 1) -> TextEncoding:
    """Random token states [B, L, TEXT_DIM] with the first `real` tokens unmasked, zeros elsewhere."""
    generator = torch.Generator().manual_seed(seed)
    mask = torch.zeros(batch, length, dtype=torch.bool)
    mask[:, :real] = True
    states = torch.randn(batch, length, TEXT_DIM, generator=generator) * mask[..., None]
    return TextEncoding(states, mask, torch.randn(batch, TEXT_DIM, generator=generator))
