"""The designer prompts, the default model's teacher and student before and after a continuation, side by side at 256 px:
same prompts, seed, guidance and upsampling stage.

    python docs/default-model/before_after.py BEFORE AFTER [OUT.jpg] [--teacher-steps 20] [--student-steps 4]

BEFORE and AFTER are default-model folders carrying a student (e.g. a copy of the shipped fashiongen/pretrained taken
before it was replaced, and the new one). Each row is one prompt: BEFORE's teacher, AFTER's teacher, BEFORE's student,
AFTER's student, each a 64 px design taken to 256 px by its folder's upsampling stage. JPEG (quality 90) keeps the
picture small enough for git.
"""

import argparse
from pathlib import Path

import numpy as np
import torch

from fashiongen.config.sections import TrainConfig
from fashiongen.grid import captioned_grid
from fashiongen.pipeline import FashionGenPipeline

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("before", type=Path)
parser.add_argument("after", type=Path)
parser.add_argument("out", type=Path, nargs="?", default=Path("docs/default-model/before_after.jpg"))
parser.add_argument("--teacher-steps", type=int, default=20)
parser.add_argument("--student-steps", type=int, default=4)
parser.add_argument("--guidance", type=float, default=3.0)
args = parser.parse_args()
torch.set_num_threads(2)
columns = []
for base, steps in (("diffusion", args.teacher_steps), ("student", args.student_steps)):
    for name, folder in (("before", args.before), ("after", args.after)):
        pipe = FashionGenPipeline.from_pretrained(folder, base=None if base == "diffusion" else base)
        pipe.show_progress = False
        columns.append((f"{'teacher' if base == 'diffusion' else 'student'} {name}, {steps} steps", pipe, steps))
tiles, captions = [], []
for prompt in TrainConfig().validation_prompts:
    for label, pipe, steps in columns:
        (image,) = pipe([prompt], seed=0, guidance_scale=args.guidance, num_inference_steps=steps)
        tiles.append(np.asarray(image))
        captions.append(f"{prompt[:28]}: {label}" if not captions or len(captions) % len(columns) == 0 else label)
grid = captioned_grid(tiles, captions, columns=len(columns), tile=max(tile.shape[0] for tile in tiles), caption_lines=2)
grid.save(args.out, quality=90)
print(f"wrote {args.out}")
