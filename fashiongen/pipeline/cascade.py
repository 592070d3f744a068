"""The cascade: a base model, its super-resolution stages and their caption encoder, and the generation core that runs
per-image inputs through the stages a size needs, in batches.

Every image has its own seed: its initial noise (and the noise of stochastic samplers and of later
stages) comes from a generator seeded with it, so an image is the same whatever else is in its batch.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable

import torch
from PIL import Image
from torch import Tensor
from tqdm.auto import tqdm

from ..data.transforms import to_uint8
from ..generators import LOW_RES, GenerationInputs, ImageFamily
from ..models.files import ModelFileError
from ..settings import PipelineInputError, SamplingSettings, default_sampler
from ..text import CaptionEncoder, TextEncoding

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StepPreview:
    """A live look at a batch mid-sampling: the model's current estimate of the finished images."""

    first: int  # index (in the call's output order) of the batch's first image
    images: Tensor  # [B, 3, R, R] float32 on the CPU, in [-1, 1], at the stage's resolution
    stage: int  # 0 = base model, then super-resolution stages
    step: int  # 1-based sampling step of this stage
    steps: int

    def pil(self) -> list[Image.Image]:
        return [Image.fromarray(array) for array in to_uint8(self.images)]


Preview = Callable[[StepPreview], None]


def check_stages(stages: Sequence[ImageFamily], encoder: CaptionEncoder) -> None:
    """A base (text-to-image) model first, then super-resolution stages going up in size, all trained with `encoder`."""
    if not stages or LOW_RES in stages[0].conditioning:
        raise ModelFileError("a pipeline needs a base (text-to-image) model as its first stage")
    for previous, stage in zip(stages, stages[1:]):
        if LOW_RES not in stage.conditioning:
            raise ModelFileError(f"{stage.source}: only super-resolution stages may follow the base model")
        if stage.resolution <= previous.resolution:
            raise ModelFileError(f"{stage.source}: super-resolution stages must go up in size "
                                 f"({previous.resolution} px, then {stage.resolution} px)")
    for stage in stages:
        if stage.info.text.identity != encoder.identity:
            raise ModelFileError(f"{stage.source} was trained with caption encoder {stage.info.text.identity}, "
                                 f"but the encoder loaded is {encoder.identity}: the model would read other embeddings")


class Cascade:
    """A base model, its super-resolution stages (ascending resolution) and the caption encoder they were trained with:
    the facts about them and the one place images are made (`render`)."""

    def __init__(self, stages: Sequence[ImageFamily], encoder: CaptionEncoder, batch_size: int | None = None) -> None:
        check_stages(stages, encoder)
        self.stages = list(stages)
        self.encoder = encoder
        self.device = next(stages[0].model.parameters()).device
        self.dtype = next(stages[0].model.parameters()).dtype
        self.batch_size = batch_size or (32 if self.device.type == "cuda" else 8)
        self.show_progress = True

    # ---------------------------------------------------------------- sizes, samplers, attributes

    @property
    def resolution(self) -> int:
        """The largest size the cascade generates natively."""
        return self.stages[-1].resolution

    @property
    def fingerprint(self) -> str:
        """Identifies the weights of every stage and the text encoder (submissions refuse to mix models)."""
        return "+".join(stage.sha256[:16] for stage in self.stages) + "/" + self.encoder.identity

    def stages_for(self, size: int | None) -> list[ImageFamily]:
        """The stages needed for `size`: up to the first that reaches it (all of them when none does)."""
        if size is None:
            return self.stages
        for number, stage in enumerate(self.stages):
            if stage.resolution >= size:
                return self.stages[: number + 1]
        return self.stages

    @property
    def samplers(self) -> tuple[str, ...]:
        """The scheduler names the base model's family takes (every stage is sampled with the same one)."""
        return self.stages[0].samplers

    @property
    def deterministic_samplers(self) -> tuple[str, ...]:
        """Samplers whose images depend on the starting draw only (interpolation needs one)."""
        return tuple(getattr(self.stages[0], "deterministic_samplers", self.samplers))

    @property
    def default_sampler(self) -> str:
        """DEFAULT_SAMPLER where the base model's family has it, else the family's first."""
        return default_sampler(self.samplers)

    @property
    def attribute_vocab(self) -> dict[str, list[str]]:
        """The attributes (and their values) the base model conditions on; {} for a model trained without."""
        return self.stages[0].attribute_vocab

    def known_attributes(self, attributes: dict[str, Any]) -> dict[str, str]:
        """The part of a dataset record's attributes the base model conditions on: its attribute names with values
        in its vocabulary (anything else is left to 'none', as in training)."""
        vocab = self.attribute_vocab
        known = {}
        for name, values in vocab.items():
            value = str(attributes.get(name, "")).strip()
            if value.lower() in {v.lower() for v in values}:
                known[name] = value
        return known

    @property
    def runtime(self) -> str:
        """How the base stage's network runs, after any fallback: 'eager float32', 'onnxruntime float32', ..."""
        used = getattr(self.stages[0], "runtime", None) or {"runtime": "eager", "dtype": str(self.dtype).replace("torch.", "")}
        return f"{used['runtime']} {used['dtype']}"

    def describe(self) -> dict[str, Any]:
        """The facts a manifest records about the model that made an image."""
        return {"fingerprint": self.fingerprint, "stages": [stage.source for stage in self.stages],
                "resolutions": [stage.resolution for stage in self.stages], "device": str(self.device),
                "dtype": str(self.dtype).replace("torch.", ""), "runtime": self.runtime}

    # ---------------------------------------------------------------- text and images

    def encode_prompts(self, prompts: Sequence[str], what: str = "prompt", allow_empty: bool = False) -> TextEncoding:
        if isinstance(prompts, str):
            prompts = [prompts]
        for number, prompt in enumerate(prompts):
            if not isinstance(prompt, str):
                raise PipelineInputError(f"{what} {number}: expected a string, got {type(prompt).__name__}")
            if not allow_empty and not prompt.strip():
                raise PipelineInputError(f"{what} {number} is empty; describe the garment (use guidance_scale=0 for "
                                         "unconditional samples)")
        before = self.encoder.num_truncated
        text = self.encoder.encode([p.strip() for p in prompts])
        if self.encoder.num_truncated > before:
            logger.warning("%d %s(s) longer than the caption encoder's %d tokens were truncated",
                           self.encoder.num_truncated - before, what, self.encoder.max_length)
        return text

    def render(self, inputs: GenerationInputs, settings: SamplingSettings, progress: Callable[[int, int], None] | None,
               preview: Preview | None = None) -> list[Image.Image]:
        """Every row of `inputs` through the cascade, as pictures of `settings.size` (Lanczos-resized when no stage
        makes that size): what every task ends with."""
        return self._to_pil(self._generate(inputs, settings, progress, preview), settings.size)

    def _generate(self, inputs: GenerationInputs, settings: SamplingSettings, progress: Callable[[int, int], None] | None,
                  preview: Preview | None = None) -> Tensor:
        """All rows through the cascade in batches of self.batch_size: [N, 3, R, R] in [-1, 1]. On GPU out-of-memory the
        batch is halved and retried, and the smaller batch size is kept for later calls."""
        if not self.attribute_vocab and any(inputs.attributes):
            logger.warning("this model was trained without attributes; ignoring %s", inputs.attributes[0] or inputs.attributes[-1])
        total, done, outputs = len(inputs.seeds), 0, []
        bar = tqdm(total=total, desc="sampling", unit="img", disable=not self.show_progress or total == 0, leave=False)
        try:
            while done < total:
                size = min(self.batch_size, total - done)
                try:
                    outputs.append(self._generate_batch(inputs.take(slice(done, done + size)), settings, preview, done))
                except torch.cuda.OutOfMemoryError:
                    if size == 1:
                        raise
                    torch.cuda.empty_cache()
                    self.batch_size = max(1, size // 2)
                    logger.warning("out of GPU memory at batch size %d; continuing with %d", size, self.batch_size)
                    continue
                done += size
                bar.update(size)
                if progress is not None:
                    progress(done, total)
        finally:
            bar.close()
        return torch.cat(outputs)

    def _generate_batch(self, inputs: GenerationInputs, settings: SamplingSettings, preview: Preview | None = None,
                        first: int = 0) -> Tensor:
        """One batch through every stage `settings.size` needs; each stage draws from the images' own generators in turn."""
        rngs = [torch.Generator().manual_seed(seed) for seed in inputs.seeds]
        images: Tensor | None = None
        for number, stage in enumerate(self.stages_for(settings.size)):
            images = stage.generate(inputs, settings, rngs, stage=number, low_res=images,
                                    preview=None if preview is None else self._stage_preview(preview, first, number))
        assert images is not None
        return images.float().cpu()

    @staticmethod
    def _stage_preview(preview: Preview, first: int, stage: int) -> Callable[[int, int, Tensor], None]:
        def report(step: int, steps: int, images: Tensor) -> None:
            preview(StepPreview(first, images.float().cpu(), stage, step, steps))

        return report

    @staticmethod
    def _to_pil(images: Tensor, size: int | None) -> list[Image.Image]:
        pictures = [Image.fromarray(array) for array in to_uint8(images)]
        if size is not None and pictures and pictures[0].width != size:
            pictures = [p.resize((size, size), Image.Resampling.LANCZOS) for p in pictures]
        return pictures


__all__ = ["Cascade", "Preview", "StepPreview", "check_stages"]
