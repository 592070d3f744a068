"""Host-drawn tensors sent to a device without a stream sync, for every layer that draws random numbers on the CPU
(so a draw is the same on every device) and uses them on a GPU: the GAN's augmentation, the trainers' steps.

    z = to_device(torch.randn(8, 128, generator=g), device)   # CPU: `.to(device)`, unchanged; CUDA: pinned, async
"""

from __future__ import annotations

import torch
from torch import Tensor


def to_device(tensor: Tensor, device: torch.device) -> Tensor:
    """A host tensor (a draw of a CPU generator: the same numbers on every device) on `device`. On CUDA through
    pinned memory without blocking: a plain `.to(device)` waits for every queued kernel, and a step that does it
    stalls the GPU (torch's caching host allocator keeps the pinned block until the copy has run)."""
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


__all__ = ["to_device"]
