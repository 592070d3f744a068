"""The designer prompts, the GAN before and after a continuation, side by side at 256 px: same prompts, seeds,
truncation and upsampling stage.

    python docs/gan-model/before_after.py BEFORE AFTER [OUT.jpg] [--seeds 2] [--superres STAGE | --superres none]

BEFORE and AFTER are model folders (e.g. a copy of the shipped fashiongen/pretrained-gan taken before it was replaced,
and the new one); each row is one prompt, its first columns BEFORE's seeds 0..n-1, then AFTER's, each 64 px design
taken to 256 px by the shipped upsampling stage (fashiongen/pretrained/upsampler-256). JPEG (quality 90) keeps the
picture small enough for git.
"""

import argparse
from pathlib import Path

import numpy as np

from fashiongen.grid import captioned_grid
from fashiongen.pipeline import FashionGenPipeline

PROMPTS = ["red floral summer dress", "black leather ankle boots", "men's navy check shirt", "white sneakers",
           "blue denim jeans", "grey wool sweater", "women's black handbag", "yellow sports t-shirt"]

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("before", type=Path)
parser.add_argument("after", type=Path)
parser.add_argument("out", type=Path, nargs="?", default=Path("docs/gan-model/before_after.jpg"))
parser.add_argument("--seeds", type=int, default=2)
parser.add_argument("--superres", default="fashiongen/pretrained/upsampler-256")
parser.add_argument("--names", default="before,after", help="the two column labels")
args = parser.parse_args()
names = args.names.split(",")
stages = [] if args.superres == "none" else [args.superres]
pipes = [FashionGenPipeline.from_pretrained(folder, superres=stages) for folder in (args.before, args.after)]
tiles, captions = [], []
for prompt in PROMPTS:
    for name, pipe in zip(names, pipes):
        pipe.show_progress = False
        images = pipe([prompt], num_images_per_prompt=args.seeds, seed=0)
        for seed, image in enumerate(images):
            tiles.append(np.asarray(image))
            captions.append(f"{prompt[:28]}: {name}, seed {seed}" if seed == 0 else f"{name}, seed {seed}")
grid = captioned_grid(tiles, captions, columns=2 * args.seeds, tile=max(tile.shape[0] for tile in tiles), caption_lines=2)
grid.save(args.out, quality=90)
print(f"wrote {args.out}")
