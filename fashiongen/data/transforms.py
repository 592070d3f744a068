"""Image preparation for training and sampling: the square resize (fashiongen.resize, re-exported here), tensors in
[-1, 1] and back.
"""

from __future__ import annotations

import numpy as np
import torch

from ..resize import RESIZE_MODES, resize_square


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 3] -> float32 [3, H, W] in [-1, 1], the range diffusion models train in."""
    if not image.flags.writeable:
        image = image.copy()
    return torch.from_numpy(image).permute(2, 0, 1).float().div(127.5).sub(1.0)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """float [B, 3, H, W] in [-1, 1] -> uint8 [B, H, W, 3]."""
    return images.clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


__all__ = ["RESIZE_MODES", "resize_square", "to_tensor", "to_uint8"]
