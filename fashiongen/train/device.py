"""What training does differently on a CUDA GPU, in one place: the precision "auto" stands for, TF32, the fused
optimizer kernels, data-loader copies that do not wait for the GPU, and host-drawn random numbers sent to the GPU
without a stream sync. On a CPU each of these leaves things as they were, so CPU training is bit for bit unchanged.

    config = with_resolved_precision(config)         # train.mixed_precision / critic.mixed_precision: auto -> bf16 | no
    enable_tf32(accelerator.device)                  # fp32 matmuls and convolutions on tensor cores (CUDA only)
    torch.optim.AdamW(params, ..., fused=fused(device, config.train.fused_adam))
    z = to_device(torch.randn(..., generator=g), device)   # a CPU generator's draw, copied without a stream sync
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from ..devices import to_device  # re-exported: the trainers' one way to send a host draw


def bf16_on_cuda() -> bool:
    """Whether this machine has a CUDA GPU with native bf16 kernels (Ampere, A100 and later; not emulated)."""
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)


def resolve_precision(precision: str, cuda_bf16: bool | None = None) -> str:
    """The mixed precision a run uses: "auto" is bf16 on a CUDA GPU with bf16 kernels (`cuda_bf16`, detected when
    None) and "no" (float32) elsewhere: on a CPU bf16 is a separate measurement (issue 36), and fp16 needs a loss
    scale that bf16 does not. Any other value is used as given."""
    if precision != "auto":
        return precision
    return "bf16" if (bf16_on_cuda() if cuda_bf16 is None else cuda_bf16) else "no"


def with_resolved_precision(config: Any, cuda_bf16: bool | None = None) -> Any:
    """`config` with train.mixed_precision and critic.mixed_precision resolved (`resolve_precision`), so the run's
    config.yaml, its checkpoints and its exports record the precision it trained in, as they did before "auto"."""
    train = dataclasses.replace(config.train, mixed_precision=resolve_precision(config.train.mixed_precision, cuda_bf16))
    critic = dataclasses.replace(config.critic, mixed_precision=resolve_precision(config.critic.mixed_precision, cuda_bf16))
    return dataclasses.replace(config, train=train, critic=critic)


def enable_tf32(device: torch.device) -> bool:
    """On CUDA: float32 matmuls and cuDNN convolutions in TF32 (tensor cores; what bf16 autocast leaves in float32 and
    a run with mixed_precision=no). Process-wide, as torch's switches are. Nothing on other devices (a CPU's oneDNN
    reads the same matmul switch). Returns whether it was enabled."""
    if device.type != "cuda":
        return False
    torch.set_float32_matmul_precision("high")  # "high": TF32 on the GPU (torch's own name for it)
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):  # torch >= 2.9: the per-backend switch
        conv.fp32_precision = "tf32"
    else:
        torch.backends.cudnn.allow_tf32 = True
    return True


def fused(device: torch.device, wanted: bool = True) -> bool | None:
    """The `fused=` of torch's Adam/AdamW: the one-kernel update on CUDA; None (torch's default kernels) elsewhere,
    which keeps CPU training bit for bit what it was."""
    return True if wanted and device.type == "cuda" else None


__all__ = ["bf16_on_cuda", "enable_tf32", "fused", "resolve_precision", "to_device", "with_resolved_precision"]
