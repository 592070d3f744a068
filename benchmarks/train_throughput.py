"""Training images/s: our loop (prepare + train_step + EMA) vs a plain diffusers-style loop, in one process.

    python benchmarks/train_throughput.py --models unet-tiny,unet-small --batch-size 16,8 --steps 30,8 --warmup 2 [--rounds 2]

--batch-size and --steps take one value for every model or one per model. For each model:

* fashiongen: configs/small64.yaml with overrides, `prepare(config)` (caption embeddings precomputed into
  a fresh cache: timed and reported as `precompute_seconds`, not counted in img/s; the cache depends on
  the encoder only, so later models of one run find it filled and report ~0), then the per-step
  work of `train()` in fashiongen/train/loop.py: `train_step` (accelerate, channels_last, min-SNR loss,
  per-example noise drawn in DataLoader workers, cached embeddings), the loss/non-finite bookkeeping
  and its gather, and `run.ema.update(...)`. Logging, validation and checkpoints are left out.
* plain: written the way diffusers' examples/text_to_image/train_text_to_image.py trains, with no
  accelerate: same UNet (`build_model`, same seed, no attribute tables), same FashionDataset with
  `collate`, DataLoader(shuffle=True, num_workers=0), fp32, contiguous tensors; every step tokenizes
  and encodes the batch captions with the frozen encoder (no cache), draws noise and timesteps,
  DDPMScheduler.add_noise / get_velocity, F.mse_loss, backward, clip_grad_norm_, unfused AdamW,
  zero_grad, loss.item() for logging and diffusers' EMAModel.step.

The first --warmup steps of each loop are not timed. With --rounds 1 (default) each loop runs alone, one
after the other. With --rounds N both are set up at once and their timed steps run in N alternating blocks
(ours, plain, plain, ours, ...), so a slow spell of a shared machine hits both; our DataLoader workers
may prefetch up to num_workers x 2 batches while the plain loop's block runs. On CUDA our loop is
also timed with train.mixed_precision=bf16 (alone, after the pair) and peak memory is reported (not
for loops that were resident together). A table goes to stdout, then one JSON line (also --out).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from accelerate.state import AcceleratorState, GradientState, PartialState
from diffusers.training_utils import EMAModel
from torch.utils.data import DataLoader
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere, without installing the package

from benchmarks.common import machine, synchronize  # noqa: E402
from fashiongen.config import Config, load_config  # noqa: E402
from fashiongen.data import FashionDataset, collate  # noqa: E402
from fashiongen.diffusion import diffusion_settings, make_noise_scheduler  # noqa: E402
from fashiongen.models import MODELS, build_model, count_parameters  # noqa: E402
from fashiongen.text import CaptionEncoder  # noqa: E402
from fashiongen.train import loop  # noqa: E402


def per_model(text: str, count: int, name: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if len(values) == 1:
        values *= count
    if len(values) != count:
        raise SystemExit(f"--{name}: give one value or one per model ({count}), got {text!r}")
    return values


def reset_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None


@dataclass
class Loop:
    """One training loop, set up and ready: `step()` runs one optimizer step."""

    label: str
    batch_size: int
    step: Callable[[], None]
    close: Callable[[], dict[str, Any]]  # releases it (DataLoader workers, memory); returns its final figures
    info: dict[str, Any]
    durations: list[float] = field(default_factory=list)  # timed steps, seconds
    block_seconds: list[float] = field(default_factory=list)  # one entry per timed block


def run_steps(loop_: Loop, count: int, device: torch.device, timed: bool, bar: tqdm) -> None:
    """`count` steps of one loop; when timed, adds a block (device synchronized at both ends) and its step times."""
    synchronize(device)
    start = time.perf_counter()
    for _ in range(count):
        began = time.perf_counter()
        loop_.step()
        if timed:
            loop_.durations.append(time.perf_counter() - began)
        bar.update(1)
    synchronize(device)
    if timed:
        loop_.block_seconds.append(time.perf_counter() - start)


def blocks(steps: int, rounds: int) -> list[int]:
    return [steps // rounds + (1 if index < steps % rounds else 0) for index in range(rounds)]


def summary(loop_: Loop, steps: int) -> dict[str, Any]:
    seconds = sum(loop_.block_seconds)
    return {"images_per_s": steps * loop_.batch_size / seconds, "seconds": seconds,
            "step_seconds": [round(d, 4) for d in loop_.durations], "block_seconds": [round(b, 3) for b in loop_.block_seconds],
            "loadavg_1min_after": round(os.getloadavg()[0], 2)}  # well above the loops' own load: another job shared the cores


def measure_sequential(setups: list[Callable[[], Loop]], steps: int, warmup: int, device: torch.device) -> list[dict[str, Any]]:
    """Each loop alone: set up, warm up, time `steps` steps in one block, release; then the next."""
    results = []
    for setup in setups:
        loop_ = setup()
        with tqdm(total=warmup + steps, desc=loop_.label, unit="step", leave=False, dynamic_ncols=True) as bar:
            run_steps(loop_, warmup, device, False, bar)
            run_steps(loop_, steps, device, True, bar)
        results.append({**loop_.info, **summary(loop_, steps), **loop_.close()})
        del loop_  # before the next setup, so its peak memory does not include this one
    return results


def measure_alternating(setups: list[Callable[[], Loop]], steps: int, warmup: int, rounds: int,
                        device: torch.device) -> list[dict[str, Any]]:
    """All loops set up at once and warmed up, then `rounds` timed blocks each, taking turns (the order flips every
    round), so a slow spell of a shared machine falls on both loops; img/s = all timed images / all timed seconds."""
    loops = [setup() for setup in setups]
    with tqdm(total=len(loops) * (warmup + steps), desc=" vs ".join(l.label for l in loops), unit="step",
              leave=False, dynamic_ncols=True) as bar:
        for loop_ in loops:
            run_steps(loop_, warmup, device, False, bar)
        for index, count in enumerate(blocks(steps, rounds)):
            for loop_ in loops if index % 2 == 0 else loops[::-1]:
                run_steps(loop_, count, device, True, bar)
    results = [{**loop_.info, **summary(loop_, steps)} for loop_ in loops]
    for result, loop_ in zip(results, loops):
        result.update(loop_.close(), peak_memory_mb=None)  # all loops were resident at once: no per-loop peak
    return results


def fresh_accelerate_state(device: torch.device) -> None:
    """Let prepare() build a new Accelerator (another mixed precision) in this process, on the asked device."""
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    PartialState(cpu=device.type == "cpu")


def setup_ours(config: Config, device: torch.device) -> Loop:
    """prepare(config), timing its caption precompute; step() does what train() does per optimizer step,
    minus logging, validation and checkpoints."""
    fresh_accelerate_state(device)
    precompute = {"seconds": 0.0, "captions": 0}
    original = loop.precompute_captions

    def timed_precompute(*args: Any, **kwargs: Any) -> int:
        began = time.perf_counter()
        count = original(*args, **kwargs)
        precompute["seconds"] += time.perf_counter() - began
        precompute["captions"] += count
        return count

    reset_memory(device)
    loop.precompute_captions = timed_precompute  # prepare() calls it by this module-level name
    began = time.perf_counter()
    try:
        run = loop.prepare(config)
    finally:
        loop.precompute_captions = original
    prepare_seconds = time.perf_counter() - began
    accelerator, t = run.accelerator, config.train
    if t.gradient_accumulation_steps != 1:
        raise SystemExit("this benchmark times optimizer steps with train.gradient_accumulation_steps=1")
    if accelerator.device.type != device.type:
        raise SystemExit(f"prepare() chose {accelerator.device}, expected {device}")

    loss_sum = torch.zeros((), device=accelerator.device)
    loss_count = torch.zeros((), device=accelerator.device)
    nonfinite = torch.zeros((), device=accelerator.device)
    state: dict[str, Any] = {"epoch": 0}
    run.train_loader.set_epoch(0)
    run.train_examples.set_epoch(0)
    state["batches"] = iter(run.train_loader)

    def step() -> None:
        nonlocal nonfinite
        try:
            batch = next(state["batches"])
        except StopIteration:
            state["epoch"] += 1
            run.train_loader.set_epoch(state["epoch"])
            run.train_examples.set_epoch(state["epoch"])
            state["batches"] = iter(run.train_loader)
            batch = next(state["batches"])
        loss, _ = loop.train_step(run, batch)
        loss_sum.add_(loss.sum())
        loss_count.add_(loss.numel())
        nonfinite = torch.maximum(nonfinite, (~torch.isfinite(loss)).any().float())
        run.step += 1
        run.ema.update(accelerator.unwrap_model(run.model), run.step)
        flags = accelerator.gather(torch.stack([nonfinite, torch.tensor(0.0, device=accelerator.device)]))
        flags = flags.view(-1, 2).max(dim=0).values
        if flags[0] > 0:
            raise RuntimeError(f"{config.model.name}: loss became NaN/inf at step {run.step}")

    def close() -> dict[str, Any]:
        figures = {"mean_loss": float(loss_sum / loss_count), "peak_memory_mb": peak_memory_mb(device)}
        state.clear()  # the DataLoader iterator: its workers shut down
        run.accelerator.end_training()
        return figures

    info = {"params": count_parameters(run.ema.module), "precompute_seconds": round(precompute["seconds"], 2),
            "captions_encoded": precompute["captions"], "prepare_seconds": round(prepare_seconds, 2)}
    return Loop(f"fashiongen {config.model.name} {t.mixed_precision}", t.batch_size, step, close, info)


def setup_plain(config: Config, device: torch.device) -> Loop:
    """The loop of diffusers' train_text_to_image.py, in plain PyTorch, on our model and data."""
    reset_memory(device)
    t, m = config.train, config.model
    encoder = CaptionEncoder(dataclasses.replace(config.text, cache_dir="", device=str(device)))  # no cache
    torch.manual_seed(config.seed)
    model = build_model(m, config.data.resolution, encoder.dim, {}).to(device).train()
    ema = EMAModel(model.parameters(), decay=t.ema_decay, use_ema_warmup=True, power=t.ema_power)  # foreach=False, the script's default
    ema.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=t.learning_rate, betas=(t.adam_beta1, t.adam_beta2),
                                  weight_decay=t.weight_decay, eps=t.adam_epsilon)
    scheduler = make_noise_scheduler(diffusion_settings(m))
    dataset = FashionDataset.from_config(config.data, seed=config.seed)
    loader = DataLoader(dataset, batch_size=t.batch_size, shuffle=True, collate_fn=collate, num_workers=0)
    state: dict[str, Any] = {"batches": iter(loader), "loss": 0.0, "steps": 0}

    def step() -> None:
        try:
            batch = next(state["batches"])
        except StopIteration:
            state["batches"] = iter(loader)
            batch = next(state["batches"])
        pixels = batch["pixel_values"].to(device)  # [B, 3, H, W]
        with torch.no_grad():
            text = encoder.encode(batch["caption"])  # tokenize + frozen encoder forward, every step
        noise = torch.randn_like(pixels)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (pixels.shape[0],), device=device).long()
        noisy = scheduler.add_noise(pixels, noise, timesteps)
        target = scheduler.get_velocity(pixels, noise, timesteps) if m.prediction_type == "v_prediction" else noise
        prediction = model(noisy, timesteps, text.token_states, text.mask, text.pooled, attribute_ids=None, low_res=None)
        loss = F.mse_loss(prediction.float(), target.float(), reduction="mean")
        state["loss"] += loss.detach().item()  # the script logs the step's loss
        state["steps"] += 1
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad()
        ema.step(model.parameters())

    def close() -> dict[str, Any]:
        figures = {"mean_loss": state["loss"] / max(state["steps"], 1), "peak_memory_mb": peak_memory_mb(device),
                   "captions_truncated": encoder.num_truncated}
        state.clear()
        return figures

    return Loop(f"plain {m.name}", t.batch_size, step, close, {"params": count_parameters(model)})


def warmup_and(steps: int, warmup: int) -> str:
    return f"{warmup} warmup + {steps} timed steps per loop"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="unet-tiny,unet-small", help="comma-separated names from fashiongen.models.MODELS")
    parser.add_argument("--batch-size", default="8", help="one value, or one per model (comma-separated)")
    parser.add_argument("--steps", default="10", help="timed optimizer steps: one value, or one per model")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before the timed ones, per loop")
    parser.add_argument("--rounds", type=int, default=1,
                        help="1: each loop alone (warmup, then all timed steps). N > 1: both loops set up at once and "
                             "timed in N alternating blocks, steadier on a shared machine (no per-loop peak memory)")
    parser.add_argument("--num-workers", type=int, default=2, help="DataLoader workers of our loop (the plain loop uses 0)")
    parser.add_argument("--source", default=str(REPO / "../shared/data/fashion-products"))
    parser.add_argument("--config", default=str(REPO / "configs/small64.yaml"))
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--text-cache", default="", help="caption cache dir for our loop (default: a fresh temporary one, "
                        "shared by the models of this run: the first model's precompute is cold, later ones find it filled)")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="extra config override for our loop only, e.g. train.channels_last=false (repeatable)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/train_throughput.json")
    args = parser.parse_args()

    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise SystemExit(f"--models: unknown {', '.join(unknown)}; known: {', '.join(MODELS)}")
    batch_sizes, step_counts = per_model(args.batch_size, len(names), "batch-size"), per_model(args.steps, len(names), "steps")
    if not 1 <= args.rounds <= min(step_counts):
        raise SystemExit(f"--rounds: between 1 and the fewest --steps ({min(step_counts)}), got {args.rounds}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    device = torch.device(args.device)
    logging.getLogger("fashiongen.text.encoder").setLevel(logging.ERROR)  # per-batch truncation warnings; counted instead

    results = []
    with tempfile.TemporaryDirectory(prefix="train-throughput-") as scratch:
        for name, batch_size, steps in zip(names, batch_sizes, step_counts):
            resolution = MODELS[name].native_resolution
            cache_dir = args.text_cache or str(Path(scratch) / "text-cache")  # one encoder for every model
            overrides = [
                f"model.name={name}", f"data.resolution={resolution}", f"data.source={args.source}",
                f"train.batch_size={batch_size}", f"train.num_workers={args.num_workers}",
                f"train.output_dir={Path(scratch) / 'runs'}", f"text.cache_dir={cache_dir}", f"text.device={args.device}",
                "train.validation_prompts=[]", "train.validate_every=0", *args.override,
            ]
            config = load_config([args.config], overrides)
            print(f"{name}: {resolution} px, batch {batch_size}, {args.warmup} warmup + {steps} timed steps per loop"
                  + (f" in {args.rounds} alternating blocks" if args.rounds > 1 else ""), file=sys.stderr)
            setups = [lambda c=config: setup_ours(c, device), lambda c=config: setup_plain(c, device)]
            if args.rounds == 1:
                ours, plain = measure_sequential(setups, steps, args.warmup, device)
            else:
                ours, plain = measure_alternating(setups, steps, args.warmup, args.rounds, device)
            row = {
                "model": name, "resolution": resolution, "batch_size": batch_size, "steps": steps, "warmup": args.warmup,
                "params": ours["params"], "params_plain": plain["params"],
                "ours_images_per_s": round(ours["images_per_s"], 2), "plain_images_per_s": round(plain["images_per_s"], 2),
                "ours_over_plain": round(ours["images_per_s"] / plain["images_per_s"], 2),
                "precompute_seconds": ours["precompute_seconds"], "captions_encoded": ours["captions_encoded"],
                "prepare_seconds": ours["prepare_seconds"],
                "ours_median_step_s": round(statistics.median(ours["step_seconds"]), 4),
                "plain_median_step_s": round(statistics.median(plain["step_seconds"]), 4),
                "ours_step_seconds": ours["step_seconds"], "plain_step_seconds": plain["step_seconds"],
                "ours_block_seconds": ours["block_seconds"], "plain_block_seconds": plain["block_seconds"],
                "ours_mean_loss": round(ours["mean_loss"], 4), "plain_mean_loss": round(plain["mean_loss"], 4),
                "plain_captions_truncated": plain["captions_truncated"],
                "ours_loadavg_1min_after": ours["loadavg_1min_after"], "plain_loadavg_1min_after": plain["loadavg_1min_after"],
            }
            if device.type == "cuda":
                bf16_config = load_config([args.config], [*overrides, "train.mixed_precision=bf16"])
                (bf16,) = measure_sequential([lambda c=bf16_config: setup_ours(c, device)], steps, args.warmup, device)  # alone
                row.update(ours_bf16_images_per_s=round(bf16["images_per_s"], 2),
                           ours_bf16_over_plain=round(bf16["images_per_s"] / plain["images_per_s"], 2),
                           ours_peak_memory_mb=ours["peak_memory_mb"], plain_peak_memory_mb=plain["peak_memory_mb"],
                           ours_bf16_peak_memory_mb=bf16["peak_memory_mb"], ours_bf16_step_seconds=bf16["step_seconds"])
            results.append(row)

    report = {
        "benchmark": "train_throughput", "machine": machine(device),
        "settings": {"config": str(Path(args.config).relative_to(REPO)) if Path(args.config).is_relative_to(REPO) else args.config,
                     "source": args.source, "num_workers_ours": args.num_workers, "num_workers_plain": 0,
                     "warmup": args.warmup, "rounds": args.rounds, "overrides_ours": args.override,
                     "command": " ".join(sys.argv)},
        "results": results,
    }
    print_table(results, device)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report))


def print_table(results: list[dict[str, Any]], device: torch.device) -> None:
    header = ["model", "params", "batch", "ours img/s", "plain img/s", "ours/plain", "precompute s"]
    if device.type == "cuda":
        header += ["ours bf16 img/s", "peak MiB ours/bf16/plain"]
    rows = []
    for r in results:
        row = [r["model"], f"{r['params'] / 1e6:.2f}M", str(r["batch_size"]), f"{r['ours_images_per_s']:.1f}",
               f"{r['plain_images_per_s']:.1f}", f"{r['ours_over_plain']:.2f}x", f"{r['precompute_seconds']:.1f}"]
        if device.type == "cuda":
            peaks = (r["ours_peak_memory_mb"], r["ours_bf16_peak_memory_mb"], r["plain_peak_memory_mb"])
            row += [f"{r['ours_bf16_images_per_s']:.1f}", "/".join("-" if mb is None else f"{mb:.0f}" for mb in peaks)]
        rows.append(row)
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))


if __name__ == "__main__":
    main()
