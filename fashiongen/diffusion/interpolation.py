"""Interpolating between two samples: slerp for Gaussian noise (keeps its norm, so every frame is
a plausible starting point), lerp for caption embeddings.

    noise = slerp(noise_a, noise_b, 0.5)          # [C, H, W]
    text = lerp_text(text_a, text_b, 0.5)          # one-row TextEncodings
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..text import TextEncoding
from .sampling import pad_tokens


def slerp(a: Tensor, b: Tensor, t: float, dot_threshold: float = 0.9995) -> Tensor:
    """Spherical interpolation of two tensors seen as flat vectors; t = 0 gives `a`, t = 1 gives `b` exactly."""
    if t <= 0.0:
        return a.clone()
    if t >= 1.0:
        return b.clone()
    a64, b64 = a.double().flatten(), b.double().flatten()
    cosine = torch.dot(a64, b64) / (a64.norm() * b64.norm()).clamp(min=1e-12)
    if cosine.abs() > dot_threshold:  # nearly parallel: the arc is a line
        return torch.lerp(a.double(), b.double(), t).to(a.dtype)
    theta = math.acos(float(cosine.clamp(-1.0, 1.0)))
    weight_a, weight_b = math.sin((1 - t) * theta) / math.sin(theta), math.sin(t * theta) / math.sin(theta)
    return (weight_a * a.double() + weight_b * b.double()).to(a.dtype)


def lerp_text(a: TextEncoding, b: TextEncoding, t: float) -> TextEncoding:
    """(1 - t) a + t b over token states and pooled vectors, padded to the longer; the mask is the union
    in between and each end's own mask at t = 0 and t = 1 (so the ends equal the plain captions)."""
    length = max(a.token_states.shape[1], b.token_states.shape[1])
    a, b = pad_tokens(a, length), pad_tokens(b, length)
    if t <= 0.0:
        return a
    if t >= 1.0:
        return b
    return TextEncoding(torch.lerp(a.token_states, b.token_states, t), a.mask | b.mask, torch.lerp(a.pooled, b.pooled, t))
