"""The designer prompts side by side: the 20-step teacher (DPM++, guidance 3) beside its few-step student at 1, 2, 4 and
8 steps (guidance 3, an input of the student), same prompt and seed, at 256 px through the folder's upsampling stage,
each with the seconds it took on this machine (one image at a time, 2 threads).

    python docs/student/designer_grid.py [FOLDER] [OUT.png]      # default: the shipped model, docs/student/prompts.png
"""

import sys
import time
from pathlib import Path

import numpy as np
import torch

from fashiongen.grid import captioned_grid, save_image
from fashiongen.pipeline import FashionGenPipeline, model_path

PROMPTS = ["red floral summer dress", "black leather ankle boots", "men's navy check shirt", "white sneakers",
           "blue denim jeans", "grey wool sweater", "women's black handbag", "yellow sports t-shirt"]
STEPS = (1, 2, 4, 8)

folder = model_path(sys.argv[1] if len(sys.argv) > 1 else None)
out = Path(sys.argv[2] if len(sys.argv) > 2 else "docs/student/prompts.png")
torch.set_num_threads(2)
teacher = FashionGenPipeline.from_pretrained(folder)
student = FashionGenPipeline.from_pretrained(folder, base="student")
for pipe in (teacher, student):
    pipe.show_progress = False
    pipe(PROMPTS[:1], seed=0)  # warm-up: first-call allocations are not the model's cost
columns = [("teacher, 20 steps", teacher, {"num_inference_steps": 20})] + [
    (f"student, {n} step{'s' if n > 1 else ''}", student, {"num_inference_steps": n}) for n in STEPS]
tiles, captions = [], []
for prompt in PROMPTS:
    for name, pipe, settings in columns:
        started = time.perf_counter()
        (image,) = pipe([prompt], seed=0, guidance_scale=3.0, **settings)
        seconds = time.perf_counter() - started
        tiles.append(np.asarray(image))
        captions.append(f"{prompt[:24]}: {name}, {seconds:.2f} s" if name.startswith("teacher") else f"{name}, {seconds:.2f} s")
save_image(captioned_grid(tiles, captions, columns=len(columns), tile=teacher.resolution, caption_lines=2), out)
print(f"{len(PROMPTS)} prompts x {len(columns)} columns: {out}")
