"""What training does differently on a CUDA GPU, in one place: the precision "auto" stands for, TF32, the fused
optimizer kernels, data-loader copies that do not wait for the GPU, and host-drawn random numbers sent to the GPU
without a stream sync; and where bf16 pays on a CPU. Set a precision other than "auto" and a CPU run trains bit for bit
as it did before "auto" (fp32: train.mixed_precision=no).

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
from ..models.runtime import cpu_support


def bf16_on_cuda() -> bool:
    """Whether this machine has a CUDA GPU with native bf16 kernels (Ampere, A100 and later; not emulated)."""
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)


# The families whose training is faster in bf16 on a CPU with oneDNN bf16 kernels and whose loss curves match fp32's
# on the same batches (benchmarks/mixed_precision.py, results/mixed_precision.json, 2 cores, AVX-512 BF16): diffusion
# 1.39x (median loss difference 0.15%), GAN 1.41x (discriminator loss 1.1%), upsampler 1.68x (L1 0.06%), critic
# 1.59x (0.01%). Not the student: 1.33x, but its consistency loss came out 10% higher (its target is a small
# difference of teacher predictions, which bf16's 8-bit mantissa blurs).
BF16_ON_CPU = frozenset({"diffusion", "gan", "upsampler", "critic"})


def bf16_on_cpu() -> bool:
    """Whether this CPU runs oneDNN's bf16 convolutions and matmuls natively (AVX-512 BF16 or AMX); without them
    bf16 convolutions fall back to a slow reference loop."""
    return cpu_support().bf16


def resolve_precision(precision: str, cuda_bf16: bool | None = None, family: str = "diffusion",
                      cpu_bf16: bool | None = None) -> str:
    """The mixed precision a run uses. "auto" is bf16 on a CUDA GPU with bf16 kernels (`cuda_bf16`, detected when
    None); without CUDA, bf16 for a family in BF16_ON_CPU on a CPU with bf16 kernels (`cpu_bf16`, detected when None)
    and "no" (float32) otherwise; fp16 needs a loss scale that bf16 does not. Any other value is used as given."""
    if precision != "auto":
        return precision
    if bf16_on_cuda() if cuda_bf16 is None else cuda_bf16:
        return "bf16"
    if torch.cuda.is_available() or family not in BF16_ON_CPU:
        return "no"
    return "bf16" if (bf16_on_cpu() if cpu_bf16 is None else cpu_bf16) else "no"


def with_resolved_precision(config: Any, cuda_bf16: bool | None = None, cpu_bf16: bool | None = None) -> Any:
    """`config` with train.mixed_precision (for its model.family) and critic.mixed_precision resolved
    (`resolve_precision`), so the run's config.yaml, its checkpoints and its exports record the precision it trained
    in, as they did before "auto"."""
    train = dataclasses.replace(config.train, mixed_precision=resolve_precision(
        config.train.mixed_precision, cuda_bf16, config.model.family, cpu_bf16))
    critic = dataclasses.replace(config.critic, mixed_precision=resolve_precision(
        config.critic.mixed_precision, cuda_bf16, "critic", cpu_bf16))
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
