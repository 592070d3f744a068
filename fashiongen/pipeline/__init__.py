"""Text -> garment images: a trained model (plus optional super-resolution stages) and its caption encoder.

    pipe = FashionGenPipeline.from_pretrained("runs/001-small64/export")   # or a run dir, a checkpoint
    images = pipe(["a black leather biker jacket with silver zips"], num_images_per_prompt=4, seed=0)
    frames = pipe.interpolate("a red midi dress", "a navy wool coat", seed_a=0, seed_b=1, num_frames=8)
    edited = pipe.edit("shirt.jpg", "the same shirt in red silk", strength=0.6)
    pipe.save_pretrained("models/small64")

Every image has its own seed: its initial noise (and the noise of stochastic samplers and of later
stages) comes from a generator seeded with it, so an image is the same whatever else is in its batch.

By concern: cascade.py (the stages and the generation core), tasks.py (text to image, interpolation, editing),
images.py (input photos and masks), folders.py (which folder, loading, saving), publishing.py (model card and
training provenance), api.py (FashionGenPipeline, one step into each).
"""

from __future__ import annotations

from ..generators import Generator, ImageFamily
from ..models.files import DEFAULT_MODEL_DIR, ModelFileError
from ..settings import MAX_SEED, PipelineInputError, SamplingSettings, check_range, check_seeds
from .api import FashionGenPipeline
from .cascade import Preview, StepPreview
from .folders import default_model_path, encoder_for, model_path
from .images import ImageInput, check_mask_shape, load_image

Stage = ImageFamily  # a stage of the cascade is a loaded model of one family (the name earlier versions used)

__all__ = ["DEFAULT_MODEL_DIR", "MAX_SEED", "FashionGenPipeline", "Generator", "ImageFamily", "ImageInput", "ModelFileError",
           "PipelineInputError", "Preview", "SamplingSettings", "Stage", "StepPreview", "check_mask_shape", "check_range",
           "check_seeds", "default_model_path", "encoder_for", "load_image", "model_path"]
