"""Where the models shipped inside the package live, and what --model diffusion / student / gan mean."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]
DEFAULT_MODEL_DIR = PACKAGE_DIR / "pretrained"  # the shipped default model, inside the package
BUNDLED_CRITIC = DEFAULT_MODEL_DIR / "critic"  # the critic evaluate.py scores with by default, shipped beside it
# the shipped GAN (one forward an image), beside the diffusion default: a sibling, so republishing either folder
# (an atomic replace of the whole folder) never takes the other with it
BUNDLED_GAN = PACKAGE_DIR / "pretrained-gan"
BUNDLED_STUDENT = DEFAULT_MODEL_DIR / "student"  # the default model's few-step student (a base of its pipeline)
# what --model diffusion / student / gan mean
SHIPPED_MODELS = {"diffusion": DEFAULT_MODEL_DIR, "student": BUNDLED_STUDENT, "gan": BUNDLED_GAN}
