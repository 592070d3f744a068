"""Training throughput of our loop beside diffusers' plain training loop, for the same model, batch and data, and the
model FLOP utilisation (MFU) of each.

Ours is the one training engine itself (fashiongen.train: prepare, then train for 2 x steps with a log line every
`steps`): the second log line's images/s, the engine's own clock, warm-up and compilation excluded. The plain loop is
the diffusers text-to-image example's: Accelerate with bf16 autocast, torch AdamW (not fused), the scheduler's
add_noise/get_velocity, an MSE loss, a host read of the loss every step, diffusers' EMAModel. Both read the same
resident batches (feed.py), so the data path is not what is compared. MFU = the model's FLOPs per image (counted by
torch's FlopCounterMode over one forward and backward) x images/s, over the bf16 matrix-product rate this device
reaches (measured here) and, where known, its data-sheet peak.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from ..config import Config
from ..models import build_model
from ..runs import MetricsLog
from ..train import train
from ..train.setup import make_accelerator
from .feed import ResidentBatches

SPEC_BF16_FLOPS = {"H100": 989e12, "H200": 989e12}  # dense bf16 tensor-core peaks of the SXM data sheets


def matmul_flops(device: torch.device, size: int = 8192, repeats: int = 10) -> float:
    """The bf16 (CUDA) or float32 (CPU) matrix-product rate this device reaches, in FLOP/s."""
    size = size if device.type == "cuda" else 512
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a, b = torch.randn(size, size, device=device, dtype=dtype), torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def spec_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((flops for key, flops in SPEC_BF16_FLOPS.items() if key in name), None)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def flops_per_image(model: torch.nn.Module, batch: dict[str, Any]) -> float:
    """Forward + backward FLOPs of one training step, per image (on a trainable copy: `model` may be an EMA's)."""
    model = copy.deepcopy(model).train().requires_grad_(True)
    with FlopCounterMode(display=False) as counter:
        prediction = _predict(model, batch, batch["pixel_values"])
        prediction.float().pow(2).mean().backward()
    return counter.get_total_flops() / batch["pixel_values"].shape[0]


def _predict(model: torch.nn.Module, batch: dict[str, Any], noisy: torch.Tensor) -> torch.Tensor:
    ids = batch["attribute_ids"] if batch["attribute_ids"].shape[1] else None
    return model(noisy, batch["timestep"], batch["text_states"], batch["text_mask"], batch["text_pooled"], ids)


def ours(run: Any, feed: ResidentBatches) -> float:
    """Images/s of our training engine: `run` is prepared for 2 x N steps logged every N (the first N: warm-up and
    compilation); the engine's own clock over the second N."""
    run.train_loader = dataclasses.replace(feed, batch_size=run.config.train.batch_size)
    run_dir = train(run, show_progress=False)
    timed = [record for record in MetricsLog(run_dir / "metrics.jsonl").read() if "images_per_s" in record]
    return float(timed[-1]["images_per_s"])


def plain(config: Config, feed: ResidentBatches, vocab: dict[str, list[str]], steps: int, work: Path,
          compile_model: bool) -> float:
    """Images/s of the diffusers example's loop (train_text_to_image.py's step) on the same model and batches."""
    from diffusers import DDPMScheduler
    from diffusers.training_utils import EMAModel

    accelerator = make_accelerator(config, work)
    model = build_model(config.model, config.data.resolution, feed.states.shape[-1], vocab)
    model.to(accelerator.device).train()
    ema = EMAModel(model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.train.learning_rate)
    scheduler = DDPMScheduler(num_train_timesteps=config.model.num_train_timesteps,
                              beta_schedule=config.model.beta_schedule, prediction_type=config.model.prediction_type)
    model, optimizer = accelerator.prepare(model, optimizer)
    network = torch.compile(model) if compile_model else model
    batches = itertools.chain.from_iterable(dataclasses.replace(feed, batch_size=config.train.batch_size)
                                            for _ in itertools.count())
    train_loss, start = 0.0, 0.0
    for step, batch in enumerate(itertools.islice(batches, 2 * steps)):
        if step == steps:
            _sync(accelerator.device)
            start = time.perf_counter()
        noisy = scheduler.add_noise(batch["pixel_values"], batch["noise"], batch["timestep"])
        target = scheduler.get_velocity(batch["pixel_values"], batch["noise"], batch["timestep"])
        with accelerator.accumulate(network):
            loss = F.mse_loss(_predict(network, batch, noisy).float(), target.float(), reduction="mean")
            train_loss += accelerator.gather(loss.repeat(noisy.shape[0])).mean().item()
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad()
        if accelerator.sync_gradients:
            ema.step(model.parameters())
    _sync(accelerator.device)
    return steps * config.train.batch_size / (time.perf_counter() - start)


__all__ = ["flops_per_image", "matmul_flops", "ours", "plain", "spec_flops"]
