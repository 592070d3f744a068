"""The README's designer prompts at 256 px: each prompt's 64 px design (seed 0, DPM++ 20 steps, guidance 3) brought to
256 px by Lanczos and by the model folder's upsampling stage (the pipeline at its full size, as sample.py makes it: the
same seed draws the same design), then the middle quarter of each zoomed 2x, so the detail (or the blur) can be seen
at the pixel.

    python docs/upsampler/designer_grid.py [MODEL] [OUT.png]      # default: the shipped model, docs/upsampler/prompts-256.png
"""

import sys
from pathlib import Path

import numpy as np
from PIL import Image

from fashiongen.grid import captioned_grid, save_image
from fashiongen.pipeline import FashionGenPipeline, model_path

PROMPTS = ["red floral summer dress", "black leather ankle boots", "men's navy check shirt", "white sneakers",
           "blue denim jeans", "grey wool sweater", "women's black handbag", "yellow sports t-shirt"]

pipe = FashionGenPipeline.from_pretrained(model_path(sys.argv[1] if len(sys.argv) > 1 else None))
out = Path(sys.argv[2] if len(sys.argv) > 2 else "docs/upsampler/prompts-256.png")
if len(pipe.stages) < 2:
    sys.exit(f"error: {pipe.stages[0].source} carries no upsampling stage")
pipe.show_progress = False
size = pipe.resolution
settings = {"seed": [0] * len(PROMPTS), "num_inference_steps": 20, "guidance_scale": 3.0}
designs = pipe(PROMPTS, size=pipe.stages[0].resolution, **settings)
stage_images = [np.asarray(image) for image in pipe(PROMPTS, **settings)]


def zoom(image: np.ndarray) -> np.ndarray:
    q = image.shape[0] // 4
    return np.asarray(Image.fromarray(image[q : 3 * q, q : 3 * q]).resize((size, size), Image.Resampling.NEAREST))


tiles, captions = [], []
for prompt, design, sharp in zip(PROMPTS, designs, stage_images):
    lanczos = np.asarray(design.resize((size, size), Image.Resampling.LANCZOS))
    nearest = np.asarray(design.resize((size, size), Image.Resampling.NEAREST))
    tiles += [nearest, lanczos, sharp, zoom(lanczos), zoom(sharp)]
    captions += [f"{prompt}: 64 px design", "Lanczos", "upsampler", "Lanczos, middle x2", "upsampler, middle x2"]
save_image(captioned_grid(tiles, captions, columns=5, tile=size, caption_lines=1), out)
print(f"{len(PROMPTS)} prompts at {size} px: {out}")
