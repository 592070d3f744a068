"""Milliseconds per image for 64 -> 256 px upsampling on this machine's cores, in one run: Lanczos, bicubic and each
upsampler (a trained stage, or a registry spec with random weights: its speed does not depend on what it learned),
with FLOPs per image and, for a spec, one training step's seconds (a batch of patches, generator and discriminator).

    python benchmarks/upsampling.py --threads 2                                   # the registry's upsampler-256 specs
    python benchmarks/upsampling.py --threads 2 --stage fashiongen/pretrained       # a model folder's trained stage

Results: benchmarks/results/upsampling.json (median of --repeats after a warm-up; ratios to Lanczos).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import machine  # noqa: E402
from fashiongen.evaluation.restoration import bicubic, lanczos, upsampling_stage  # noqa: E402
from fashiongen.upsampler import UPSAMPLERS, Degradation, PatchDiscriminator, Upsampler, degrade  # noqa: E402
from fashiongen.upsampler.losses import feature_matching, patch_generator, patch_hinge, reconstruction  # noqa: E402


def median_seconds(call: Callable[[], object], repeats: int) -> float:
    call()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def flops(call: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter:
        call()
    return counter.get_total_flops()


def train_step_seconds(name: str, batch: int, patch: int, repeats: int) -> float:
    """One generator + discriminator step on `batch` patches of `patch` px (L1 + adversarial + feature matching)."""
    spec = UPSAMPLERS[name]
    generator, discriminator = Upsampler(spec, 384), PatchDiscriminator(spec)
    g_opt, d_opt = torch.optim.Adam(generator.parameters()), torch.optim.Adam(discriminator.parameters())
    high = torch.rand(batch, 3, patch, patch) * 2 - 1
    low = degrade(high, Degradation(), torch.Generator().manual_seed(0))
    pooled = torch.randn(batch, 384)

    def step() -> None:
        output = generator(low, pooled)
        d_real, real_features = discriminator(high, low)
        d_fake, _ = discriminator(output.detach(), low)
        d_opt.zero_grad()
        patch_hinge(d_real, d_fake).backward()
        d_opt.step()
        d_on_fake, fake_features = discriminator(output, low)
        loss = reconstruction(output, high).mean() + 0.01 * patch_generator(d_on_fake) + 0.1 * feature_matching(fake_features, real_features)
        g_opt.zero_grad()
        loss.backward()
        g_opt.step()

    return median_seconds(step, repeats)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4, help="images per call (default 4: the app's request)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--specs", nargs="*", default=[n for n in UPSAMPLERS if n.startswith("upsampler-256")])
    parser.add_argument("--stage", action="append", default=[], help="a trained stage or a model folder carrying one")
    parser.add_argument("--train-batch", type=int, default=16)
    parser.add_argument("--patch", type=int, default=128)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "upsampling.json"))
    options = parser.parse_args(argv)
    torch.set_num_threads(options.threads)
    torch.manual_seed(0)
    low = torch.rand(options.batch, 3, 64, 64) * 2 - 1
    pooled = torch.randn(options.batch, 384)
    rows = []
    for name, method in (("lanczos", lanczos(256)), ("bicubic", bicubic(256))):
        rows.append({"method": name, "ms_per_image": 1000 * median_seconds(lambda: method(low, slice(None)), options.repeats)
                     / options.batch})
    networks = [(name, Upsampler(UPSAMPLERS[name], 384).eval()) for name in options.specs]
    networks += [(f"stage {path}", upsampling_stage(path)[0].model) for path in options.stage]
    for name, network in networks:
        with torch.no_grad():
            seconds = median_seconds(lambda: network(low, pooled), options.repeats)
            count = flops(lambda: network(low, pooled))
        row = {"method": name, "ms_per_image": 1000 * seconds / options.batch, "gflop_per_image": count / options.batch / 1e9,
               "parameters_m": sum(p.numel() for p in network.parameters()) / 1e6}
        if name in UPSAMPLERS:
            row["train_step_s"] = train_step_seconds(name, options.train_batch, options.patch, max(2, options.repeats // 2))
            row["train"] = f"batch {options.train_batch} of {options.patch} px patches, G + D"
        rows.append(row)
    base = rows[0]["ms_per_image"]
    for row in rows:
        row["x_lanczos"] = row["ms_per_image"] / base
    result = {"machine": machine(torch.device("cpu")), "threads": options.threads, "batch": options.batch, "rows": rows}
    Path(options.out).write_text(json.dumps(result, indent=2) + "\n")
    for row in rows:
        extra = "".join(f", {key} {row[key]:.3g}" for key in ("gflop_per_image", "parameters_m", "train_step_s") if key in row)
        print(f"{row['method']:32s} {row['ms_per_image']:8.1f} ms/image ({row['x_lanczos']:.1f}x Lanczos){extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
