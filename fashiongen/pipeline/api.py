"""FashionGenPipeline, the public class: the cascade (cascade.py) plus its tasks (tasks.py), folders (folders.py), model
card (publishing.py) and settings (settings.resolve), each method one step into the module that does the work."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable

import torch
from PIL import Image
from torch import Tensor

from ..generators import ImageFamily
from ..settings import PipelineInputError, SamplingSettings, resolve, resolve_seeds
from ..text import CaptionEncoder
from . import folders, tasks
from .cascade import Cascade, Preview
from .images import ImageInput, input_size, load_image, square_mask, square_photo
from .publishing import model_card
from .tasks import Attributes

Progress = Callable[[int, int], None]


class FashionGenPipeline(Cascade):
    """A base model, its super-resolution stages (ascending resolution) and the caption encoder they were trained with."""

    def __init__(self, stages: Sequence[ImageFamily], encoder: CaptionEncoder, batch_size: int | None = None) -> None:
        super().__init__(stages, encoder, batch_size)
        self.bases: dict[str, Path] = {}  # a saved pipeline's other base models (pipeline.json "bases"), by name

    # ---------------------------------------------------------------- loading and saving (folders.py)

    @classmethod
    def from_pretrained(cls, path: str | Path, *, superres: Sequence[str | Path] = (), device: str | torch.device = "cpu",
                        dtype: str = "float32", runtime: str = "eager", runtime_cache_dir: str | Path | None = None,
                        text_encoder: str | None = None, cache_dir: str = "",
                        verify: bool = True, base: str | None = None) -> FashionGenPipeline:
        """Load a saved pipeline, an exported model, a checkpoint or a run directory, plus optional SR stages.

        `text_encoder` overrides where the caption encoder is loaded from (a local directory); its
        identity must still match the one the model was trained with. `base` picks one of a saved pipeline's other
        base models (pipeline.json's "bases", e.g. "student": the few-step student of the folder's model) in place of
        its first stage; the later stages stay.
        """
        stages, bases = folders.load_stages(path, superres, device, dtype, runtime, runtime_cache_dir, verify, base)
        pipe = cls(stages, folders.encoder_for(stages[0], device, text_encoder, cache_dir))
        pipe.bases = bases
        return pipe

    def base_only(self) -> FashionGenPipeline:
        """The same base model and encoder without the stages after it (sizes above the base's become Lanczos resizes):
        what an upsampling stage is compared against."""
        pipe = FashionGenPipeline(self.stages[:1], self.encoder, self.batch_size)
        pipe.show_progress = self.show_progress
        return pipe

    def save_pretrained(self, path: str | Path, dtype: str | None = None, critic: str | Path | None = None,
                        notes: str = "", overwrite: bool = False, bases: dict[str, ImageFamily] | None = None) -> Path:
        """The base model at `path`, later stages in `path/<family>-<px>/` (superres-128, upsampler-256), pipeline.json
        and a model card (atomic).
        `critic`: a saved critic directory copied into `path/critic/`, so model and judge travel together;
        `notes`: markdown added to the model card (what the model can and cannot do).
        `path` must be new, empty or a model folder of ours; anything else, and the package's own default model,
        is replaced only with `overwrite=True` (see models.files.check_output_dir).
        `bases`: other base models saved in `path/<name>/` and offered by name (`from_pretrained(path, base=name)`):
        a few-step student of the first stage, whose files name the folder above as its teacher."""
        return folders.save(self, path, dtype, critic, notes, overwrite, bases)

    def model_card(self, notes: str = "", critic: str | None = None, bases: dict[str, ImageFamily] | None = None) -> str:
        """A README for the saved model: what it is, what it was trained on, how long, and known metrics."""
        return model_card(self.stages, notes, critic, bases)

    # ---------------------------------------------------------------- settings and seeds (settings.resolve)

    def sampling_settings(self, settings: SamplingSettings | None = None, **values: Any) -> SamplingSettings:
        """The settings of a keyword call: `settings` as built at an edge, or the keywords given (None = default),
        checked once here against the library's bounds and the base model's samplers; not both."""
        return resolve(self.stages[0], settings, **values)

    def settings_for_model(self, settings: SamplingSettings, given: set[str] | frozenset[str],
                           names: dict[str, str] | None = None) -> SamplingSettings:
        """Settings an edge built before the model was loaded, fitted to it: a setting the caller `given` explicitly
        that the model's family does not use is refused (naming it as the caller knows it), and an unset scheduler
        becomes the family's default."""
        return resolve(self.stages[0], settings, given=given, names=names)

    def settings_record(self, settings: SamplingSettings) -> dict[str, Any]:
        """What a report records of `settings`: the fields the base model's family reads, its defaults filled in."""
        return self.stages[0].settings_record(settings)

    @staticmethod
    def seeds_for(count: int, seed: int | Sequence[int] | None) -> list[int]:
        """`seed` (image i gets seed + i), one seed per image, or fresh random seeds (recorded, so still reproducible)."""
        return resolve_seeds(count, seed)

    @staticmethod
    def seeds_from(generator: torch.Generator | Sequence[torch.Generator], count: int) -> list[int]:
        """One seed per image drawn from a generator (or from each of `count` generators)."""
        return resolve_seeds(count, rngs=generator)

    # ---------------------------------------------------------------- tasks (tasks.py)

    def __call__(self, prompts: str | Sequence[str], negative_prompt: str | Sequence[str] | None = None,
                 num_images_per_prompt: int = 1, num_inference_steps: int | None = None, guidance_scale: float | None = None,
                 seed: int | Sequence[int] | None = None, scheduler: str | None = None, attributes: Attributes = None,
                 size: int | None = None, progress: Progress | None = None,
                 generator: torch.Generator | Sequence[torch.Generator] | None = None,
                 preview: Preview | None = None, settings: SamplingSettings | None = None,
                 truncation: float | None = None) -> list[Image.Image]:
        """Images for prompts, prompt-major (all images of prompt 0 first); image i has seed `seed + i`.

        Sampling settings come as keywords (None = the default) or as one `settings`. `generator` (one, or one per
        image) is the diffusers-style alternative to `seed`: each image's seed is drawn from it, so the same
        generator state gives the same images. `preview` is called after every sampling step with the current
        estimate of the batch's images (live previews; raising in it stops the call).
        """
        prompts = tasks.prompt_list(prompts, num_images_per_prompt)
        settings = self.sampling_settings(settings, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                                          scheduler=scheduler, size=size, truncation=truncation)
        inputs = tasks.text_to_image(self, prompts, negative_prompt, num_images_per_prompt, seed, attributes, generator,
                                     settings)
        return self.render(inputs, settings, progress, preview)

    def generate_images(self, prompts: Sequence[str], seeds: Sequence[int], settings: SamplingSettings,
                        attributes: Sequence[dict[str, str]] | None = None, progress: Progress | None = None,
                        preview: Preview | None = None) -> list[Image.Image]:
        """One image per (prompt, seed) pair with settings built at the edge: what sample.py, submissions and the app call."""
        settings = self.sampling_settings(settings)
        return self.render(tasks.paired(self, prompts, seeds, settings, attributes), settings, progress, preview)

    def interpolate(self, prompt_a: str, prompt_b: str, seed_a: int = 0, seed_b: int = 1, num_frames: int = 8,
                    num_inference_steps: int | None = None, guidance_scale: float | None = None, scheduler: str | None = None,
                    negative_prompt: str | None = None, attributes: dict[str, str] | None = None, size: int | None = None,
                    progress: Progress | None = None, preview: Preview | None = None,
                    settings: SamplingSettings | None = None, truncation: float | None = None) -> list[Image.Image]:
        """Frames from (prompt_a, seed_a) to (prompt_b, seed_b): slerp of every stage's starting draw, lerp of the caption
        embeddings, one deterministic sampler; frame 0 and the last frame equal the two single samples."""
        if num_frames < 2:
            raise PipelineInputError(f"num_frames must be >= 2, got {num_frames}")
        settings = self.sampling_settings(settings, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                                          scheduler=scheduler, negative_prompt=negative_prompt, size=size,
                                          truncation=truncation)
        inputs = tasks.interpolation(self, prompt_a, prompt_b, seed_a, seed_b, num_frames, attributes, settings)
        return self.render(inputs, settings, progress, preview)

    @property
    def input_size(self) -> int:
        """Edit inputs need only this many pixels a side (4x the model's), so large JPEGs are decoded reduced."""
        return input_size(self.stages[0])

    def prepare_image(self, image: ImageInput, where: str = "image") -> Tensor:
        """An input photo as the base model sees training images: [3, R, R] in [-1, 1]."""
        return square_photo(load_image(image, where, min_size=self.input_size), self.stages[0])

    def prepare_mask(self, mask: ImageInput, where: str = "mask") -> Tensor:
        """A mask image (white = repaint) -> [1, R, R] of 0/1, resized like the photo."""
        return square_mask(load_image(mask, where, min_size=self.input_size), self.stages[0], where)

    def edit(self, image: ImageInput, prompt: str, strength: float = 0.6, mask: ImageInput | None = None,
             num_images: int = 1, seed: int | Sequence[int] | None = 0, num_inference_steps: int | None = None,
             guidance_scale: float | None = None, scheduler: str | None = None, negative_prompt: str | None = None,
             attributes: dict[str, str] | None = None, size: int | None = None,
             progress: Progress | None = None, preview: Preview | None = None,
             settings: SamplingSettings | None = None) -> list[Image.Image]:
        """Text-guided editing: SDEdit (noise the photo to `strength`, denoise with the new caption); with a
        mask, only the white region is repainted and the rest is kept (RePaint-style). strength 0 returns the input.
        A model whose family cannot edit is refused before any work."""
        tasks.check_edit(self, strength, num_images)
        settings = self.sampling_settings(settings, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                                          scheduler=scheduler, negative_prompt=negative_prompt, size=size)
        inputs = tasks.edit(self, image, prompt, strength, mask, num_images, seed, attributes, settings)
        return self.render(inputs, settings, progress, preview)


__all__ = ["FashionGenPipeline"]
