"""bf16 against fp32 training, every family, in one run: images/s and the loss curves on the same batches.

    python benchmarks/mixed_precision.py [--families diffusion,gan,upsampler,student,critic] [--rounds 2] [--scale 1]

Each family but the critic (which has no init_from) trains from its shipped weights (what a continuation does) with its own config, twice per
round: `mixed_precision=no` then `bf16`, the order flipped every round (no, bf16, bf16, no, ...) so a slow spell of a
shared machine hits both. Each run is `python train.py CONFIG ...` (the critic: `python -m fashiongen.train critic`)
in a fresh process and scratch folder, with validation and checkpoints out of the way; the same seed gives both
precisions the same batches, noise and timesteps, so their logged losses compare point by point. Throughput is
images over seconds of the logged intervals after the first (the warm-up); the loss agreement is the median and
the largest relative difference of the logged losses. The upsampler's discriminator joins at step 0 here (its
config waits 1,000 steps), so both of its networks are timed.

Writes benchmarks/results/mixed_precision.json (one record per family, with the machine and date it was measured on:
img/s per run, speed-up, loss agreement; families not named in --families keep their earlier record) and
mixed_precision.png (each family's loss curves, fp32 against bf16).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.common import machine  # noqa: E402


@dataclass(frozen=True)
class Family:
    command: tuple[str, ...]  # the training command, before the overrides
    section: str  # where steps, batch size, precision and logging live: train or critic
    steps: int  # at --scale 1
    log_every: int
    loss: str  # the logged loss compared between precisions
    overrides: tuple[str, ...] = ()


TRAIN = (sys.executable, "train.py")
FAMILIES = {
    "diffusion": Family((*TRAIN, "configs/default64.yaml"), "train", 32, 4, "loss",
                        ("train.init_from=fashiongen/pretrained", "train.warmup_steps=0")),
    "gan": Family((*TRAIN, "configs/gan64.yaml"), "train", 16, 2, "d_loss", ("train.init_from=fashiongen/pretrained-gan",)),
    "upsampler": Family((*TRAIN, "configs/upsampler256.yaml"), "train", 16, 2, "l1",
                        ("train.init_from=fashiongen/pretrained/upsampler-256", "upsampler.adversarial_start=0",
                         "train.num_workers=0")),
    "student": Family((*TRAIN, "configs/distill64.yaml"), "train", 16, 2, "loss",
                      ("distill.init_student=fashiongen/pretrained/student",)),
    "critic": Family((sys.executable, "-m", "fashiongen.train", "critic", "configs/critic.yaml"), "critic", 24, 2, "loss"),
}


def run_once(family: Family, precision: str, steps: int, scratch: Path) -> dict[str, Any]:
    """One training run in a fresh process; its logged lines (step, loss, images/s, time)."""
    out = scratch / f"{precision}-{time.monotonic_ns()}"
    s = family.section
    quiet = (f"{s}.validate_every=0", f"{s}.checkpoint_every={steps * 10}", f"{s}.output_dir={out}")
    command = [*family.command, *family.overrides, f"{s}.max_steps={steps}", f"{s}.log_every={family.log_every}",
               f"{s}.mixed_precision={precision}", *quiet, "--quiet"]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    metrics = sorted(out.rglob("metrics.jsonl"))
    lines = [json.loads(line) for line in metrics[0].read_text().splitlines()] if metrics else []
    logged = [r for r in lines if "images_per_s" in r and family.loss in r]
    if len(logged) < 3:
        raise SystemExit(f"{' '.join(command)}: {len(logged)} logged lines with {family.loss!r} in {metrics}")
    timed = logged[1:]  # the first interval holds the warm-up (allocations, oneDNN kernel choice)
    rate = len(timed) / sum(1 / r["images_per_s"] for r in timed)  # equal intervals: the harmonic mean is the true rate
    return {"precision": precision, "images_per_s": rate, "wall_s": time.perf_counter() - started,
            "steps": [r["step"] for r in logged], "loss": [r[family.loss] for r in logged]}


def agreement(fp32: list[float], bf16: list[float]) -> dict[str, float]:
    """Relative differences of the logged losses, point by point (same batches, same noise)."""
    diffs = [abs(b - a) / max(abs(a), 1e-12) for a, b in zip(fp32, bf16)]
    scale = max(statistics.mean(abs(a) for a in fp32), 1e-12)  # a loss that crosses zero (a hinge GAN's) has no ratio
    return {"median_relative_difference": statistics.median(diffs), "max_relative_difference": max(diffs),
            "median_difference_over_mean_loss": statistics.median(abs(b - a) for a, b in zip(fp32, bf16)) / scale,
            "final_fp32": fp32[-1], "final_bf16": bf16[-1]}


def measure(name: str, rounds: int, scale: float, scratch: Path) -> dict[str, Any]:
    family = FAMILIES[name]
    steps = max(3 * family.log_every, round(family.steps * scale))
    runs: list[dict[str, Any]] = []
    for r in range(rounds):
        for precision in (("no", "bf16") if r % 2 == 0 else ("bf16", "no")):
            runs.append(run_once(family, precision, steps, scratch))
            print(f"{name:10s} {precision:5s} {runs[-1]['images_per_s']:8.2f} img/s  "
                  f"{family.loss} {runs[-1]['loss'][-1]:.5g}  ({runs[-1]['wall_s']:.0f} s)", flush=True)
    rate = {p: statistics.mean(r["images_per_s"] for r in runs if r["precision"] == p) for p in ("no", "bf16")}
    first = {p: next(r for r in runs if r["precision"] == p) for p in ("no", "bf16")}
    return {"family": name, "steps": steps, "loss_key": family.loss, "images_per_s_fp32": rate["no"],
            "images_per_s_bf16": rate["bf16"], "speedup": rate["bf16"] / rate["no"],
            "loss_agreement": agreement(first["no"]["loss"], first["bf16"]["loss"]), "runs": runs}


def draw(results: list[dict[str, Any]], path: Path) -> None:
    from fashiongen.plots import plt

    fig, axes = plt.subplots(1, len(results), figsize=(4 * len(results), 3.4), squeeze=False)
    for ax, result in zip(axes[0], results):
        for precision, style in (("no", "-"), ("bf16", "--")):
            run = next(r for r in result["runs"] if r["precision"] == precision)
            name = "fp32" if precision == "no" else "bf16"
            label = f"{name} {result['images_per_s_' + name]:.1f} img/s"
            ax.plot(run["steps"], run["loss"], style, label=label)
        ax.set_title(f"{result['family']}: bf16 {result['speedup']:.2f}x")
        ax.set_xlabel("step")
        ax.set_ylabel(result["loss_key"])
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", default=",".join(FAMILIES), help="comma-separated: " + ", ".join(FAMILIES))
    parser.add_argument("--rounds", type=int, default=2, help="fp32/bf16 pairs per family, order flipped each round")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every family's step count")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "mixed_precision.json")
    args = parser.parse_args()
    names = [n.strip() for n in args.families.split(",") if n.strip()]
    unknown = [n for n in names if n not in FAMILIES]
    if unknown or args.rounds < 1 or not 0 < args.scale <= 100:
        raise SystemExit(f"error: families must be among {', '.join(FAMILIES)} (got {unknown}); rounds >= 1; 0 < scale <= 100")
    with tempfile.TemporaryDirectory(prefix="mixed-precision-") as scratch:
        results = [measure(name, args.rounds, args.scale, Path(scratch)) for name in names]
    print(f"\n{'family':10s} {'fp32 img/s':>10s} {'bf16 img/s':>10s} {'speed-up':>8s} {'loss diff (median / max)':>26s}")
    for r in results:
        a = r["loss_agreement"]
        print(f"{r['family']:10s} {r['images_per_s_fp32']:10.2f} {r['images_per_s_bf16']:10.2f} {r['speedup']:7.2f}x "
              f"{a['median_relative_difference']:12.2%} / {a['max_relative_difference']:.2%}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    here = {"machine": machine(torch.device("cpu")), "rounds": args.rounds}
    kept = json.loads(args.out.read_text())["results"] if args.out.is_file() else []  # the families not measured now
    results = [r for r in kept if r["family"] not in names] + [{**r, **here} for r in results]
    results.sort(key=lambda r: list(FAMILIES).index(r["family"]))
    args.out.write_text(json.dumps({"results": results}, indent=1) + "\n")
    draw(results, args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
