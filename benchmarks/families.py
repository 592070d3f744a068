"""Seconds and FLOPs for 4 images from each generator family, through the same pipeline call, in one run.

    python benchmarks/families.py                                     # the shipped diffusion model vs the shipped GAN (and a gan-64)
    python benchmarks/families.py --model diffusion=fashiongen/pretrained --model gan=$RUNS/NNN-gan64/export

A model may be given as NAME=PATH (an export, pipeline, checkpoint or run), or the defaults are used: the shipped
diffusion model (20 dpm++ steps, guidance 3: 40 UNet forwards an image), the shipped GAN (gan-64s) when installed, and
a gan-64 generator (twice the width) with random weights (its speed does not depend on what it learned) written to a
scratch folder. Each model draws the same 4 prompts x 1
image `--repeats` times after a warm-up; the table gives the median seconds, the FLOPs per image (torch.utils.
flop_counter over one call) and the speed ratio to the first model. Results: benchmarks/results/families.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import machine  # noqa: E402
from fashiongen.config import TextConfig, load_config  # noqa: E402
from fashiongen.gan import GANS, TextGenerator  # noqa: E402
from fashiongen.gan.generator import gan_description  # noqa: E402
from fashiongen.models.files import BUNDLED_GAN, DEFAULT_MODEL_DIR, replacing_directory, write_model_files  # noqa: E402
from fashiongen.pipeline import FashionGenPipeline  # noqa: E402
from fashiongen.text import CaptionEncoder  # noqa: E402

PROMPTS = ["red floral summer dress", "black leather ankle boots", "men's navy check shirt", "white sneakers"]


def scratch_gan(folder: Path) -> Path:
    """gan-64 with random weights and the shipped model's attributes, as model files."""
    encoder = CaptionEncoder(TextConfig(cache_dir=""))
    vocab = FashionGenPipeline.from_pretrained(DEFAULT_MODEL_DIR).attribute_vocab
    config = load_config([], ["model.family=gan", "model.name=gan-64", "data.resolution=64"])
    model = TextGenerator(GANS["gan-64"], encoder.dim, vocab)
    with replacing_directory(folder) as temporary:
        write_model_files(model.state_dict(), gan_description(model, config, encoder.identity, {"steps": 0}), temporary)
    return folder


def measure(path: Path, repeats: int) -> dict[str, float]:
    pipe = FashionGenPipeline.from_pretrained(path)
    pipe.show_progress = False
    pipe(PROMPTS, seed=0)  # warm-up
    with FlopCounterMode(display=False) as counter:
        pipe(PROMPTS, seed=0)
    times = []
    for repeat in range(repeats):
        start = time.perf_counter()
        pipe(PROMPTS, seed=repeat)
        times.append(time.perf_counter() - start)
    return {"family": pipe.stages[0].family, "seconds_4_images": statistics.median(times), "min_s": min(times),
            "gflop_per_image": counter.get_total_flops() / len(PROMPTS) / 1e9,
            "parameters_m": sum(p.numel() for p in pipe.stages[0].model.parameters()) / 1e6}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", default=[], metavar="NAME=PATH")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "families.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        models = dict(item.split("=", 1) for item in args.model) or {
            "diffusion (shipped, 20 dpm++ steps, guidance 3)": str(DEFAULT_MODEL_DIR),
            **({"gan (shipped, gan-64s)": str(BUNDLED_GAN)} if BUNDLED_GAN.is_dir() else {}),
            "gan-64 (random weights)": str(scratch_gan(Path(scratch) / "gan64"))}
        results = {name: measure(Path(path), args.repeats) for name, path in models.items()}
    first = next(iter(results.values()))
    print(f"{'model':50} {'s / 4 images':>13} {'GFLOP / image':>14} {'params M':>9} {'speed-up':>9}")
    for name, result in results.items():
        result["speedup_vs_first"] = first["seconds_4_images"] / result["seconds_4_images"]
        print(f"{name:50} {result['seconds_4_images']:13.3f} {result['gflop_per_image']:14.2f} {result['parameters_m']:9.1f} "
              f"{result['speedup_vs_first']:9.0f}x")
    Path(args.out).write_text(json.dumps({"machine": machine(torch.device("cpu")), "prompts": PROMPTS, "results": results},
                                         indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
