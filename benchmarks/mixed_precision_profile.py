"""Where a diffusion training step spends its time, fp32 against bf16: why bf16 gains what it gains on this CPU.

    python benchmarks/mixed_precision_profile.py [--steps 8] [--warmup 3]

Builds the shipped default model's training run (configs/default64.yaml, train.init_from=fashiongen/pretrained, batch
8) once per precision, runs --warmup steps, then profiles --steps steps (the trainer's train_step and the EMA update,
as the engine runs them) with torch.profiler, and sums the ops' own CPU time into groups: convolutions and matmuls
(what bf16 speeds up), casts to and from bf16 (what it adds), normalisation, softmax and attention, the optimizer and
EMA (float32 in both), and the rest. Writes benchmarks/results/mixed_precision_profile.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.common import machine  # noqa: E402
from fashiongen.config import load_config  # noqa: E402
from fashiongen.train.trainers import trainer_class  # noqa: E402

GROUPS = {  # the first group whose words appear in an op's name takes its time
    "optimizer and EMA (float32)": ("_foreach", "adam", "lerp"),
    "casts to/from bf16": ("_to_copy", "copy_", "to_dense", "reorder"),
    "convolutions and matmuls": ("convolution", "conv2d", "mm", "matmul", "linear", "baddbmm", "_scaled_dot_product"),
    "normalisation": ("group_norm", "layer_norm", "batch_norm"),
    "softmax": ("softmax",),
}


def group_of(name: str) -> str:
    lowered = name.lower()
    return next((group for group, words in GROUPS.items() if any(word in lowered for word in words)), "other")


def measure(precision: str, steps: int, warmup: int, scratch: Path) -> dict[str, Any]:
    config = load_config([str(REPO / "configs" / "default64.yaml")], [
        f"train.init_from={REPO / 'fashiongen' / 'pretrained'}", f"train.mixed_precision={precision}",
        "train.validate_every=0", "train.num_workers=0", f"train.output_dir={scratch / precision}",
        f"data.source={REPO.parent / 'shared' / 'data' / 'fashion-products'}"])
    run = trainer_class("diffusion").build(config, None, False)
    batches = iter(run.train_loader)

    def step() -> None:
        run.train_step(next(batches))
        run.ema.update(run.accelerator.unwrap_model(run.model), run.step)

    for _ in range(warmup):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    totals: dict[str, float] = {}
    for event in prof.key_averages():
        if event.key.startswith(("aten::", "mkldnn::", "Optimizer")) or "backward" in event.key.lower():
            totals[group_of(event.key)] = totals.get(group_of(event.key), 0.0) + event.self_cpu_time_total / 1e6
    total = sum(event.self_cpu_time_total for event in prof.key_averages()) / 1e6
    totals["other"] = totals.get("other", 0.0) + total - sum(totals.values())
    return {"precision": precision, "seconds_per_step": total / steps,
            "seconds_per_step_by_group": {k: v / steps for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "mixed_precision_profile.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mp-profile-") as scratch:
        results = [measure(p, args.steps, args.warmup, Path(scratch)) for p in ("no", "bf16")]
    fp32, bf16 = (r["seconds_per_step_by_group"] for r in results)
    print(f"{'group':32s} {'fp32 s/step':>12s} {'bf16 s/step':>12s} {'ratio':>7s}")
    for group in fp32.keys() | bf16.keys():
        a, b = fp32.get(group, 0.0), bf16.get(group, 0.0)
        print(f"{group:32s} {a:12.3f} {b:12.3f} {a / b if b else float('inf'):6.2f}x")
    a, b = results[0]["seconds_per_step"], results[1]["seconds_per_step"]
    print(f"{'whole step (profiled)':32s} {a:12.3f} {b:12.3f} {a / b:6.2f}x")
    args.out.write_text(json.dumps({"machine": machine(torch.device("cpu")), "steps": args.steps, "results": results},
                                   indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
