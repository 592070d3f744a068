"""How much a garment changes with the seed, beside how much it changes with the caption (the figure in the README's
GAN section): 8 validation captions spread over the clean split, 4 seeds each, with their attributes; mean |pixel
difference| (0-255, 64 px) between images of one caption, and between images of different captions with one seed.

    python docs/gan-model/seed_variety.py gan            # the shipped GAN
    python docs/gan-model/seed_variety.py diffusion      # the shipped diffusion model (20 DPM++ steps, guidance 3)
"""

import itertools
import sys

import numpy as np

from fashiongen.pipeline import FashionGenPipeline, model_path
from fashiongen.submission import read_caption_list

pipe = FashionGenPipeline.from_pretrained(model_path(sys.argv[1]))
pipe.show_progress = False
items = read_caption_list("../shared/data/fashion-products", split="validation", caption_mode="both")
items = items[:: len(items) // 8][:8]
images = {item.id: [np.asarray(image, dtype=np.float32) for image in
                    pipe([item.caption] * 4, seed=[0, 1, 2, 3], attributes=pipe.known_attributes(item.attributes))]
          for item in items}
within = np.mean([np.abs(a - b).mean() for drawn in images.values() for a, b in itertools.combinations(drawn, 2)])
across = np.mean([np.abs(images[x][s] - images[y][s]).mean() for s in range(4) for x, y in itertools.combinations(images, 2)])
print(f"{sys.argv[1]}: within a caption (across seeds) {within:.1f}, across captions (one seed) {across:.1f}, "
      f"ratio {within / across:.2f}")
