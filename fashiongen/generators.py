"""The one interface every image family implements (ImageFamily): the pipeline, sample.py, evaluate.py, submissions and
the app reach a model only through it, so a new family (a GAN, a few-step student) is one folder and one line in
fashiongen.families.FAMILIES.

    stage = load_generator("runs/001-small64/export")     # fashiongen.families: model.json's "family" picks the class
    rngs = [torch.Generator().manual_seed(seed) for seed in inputs.seeds]
    images = stage.generate(inputs, settings, rngs)       # [N, 3, R, R] in [-1, 1]

A family says what conditioning it accepts (text, attributes, a low-res image), which sampler names its settings may
name, and whether it can edit a photo; the pipeline refuses what a family cannot do before any work, with one line.
Every draw of randomness comes from the per-image random number generators (`rngs`, torch.Generator) the pipeline
seeds, in a fixed order, so an image depends on its seed only. ("Generator" alone is kept as an old name of the
protocol; the GAN's network is gan.TextGenerator.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Protocol, Sequence, runtime_checkable

import torch
from torch import Tensor, nn

from .models.files import ModelFiles, ModelInfo
from .settings import PipelineInputError, SamplingSettings
from .text import TextEncoding

TEXT, ATTRIBUTES, LOW_RES = "text", "attributes", "low_res"  # the conditioning a family may accept

StepCallback = Callable[[int, int, Tensor], None]  # (step, steps, current estimate of the images [B, 3, R, R] in [-1, 1])


@dataclass
class GenerationInputs:
    """Per-image inputs of one generation call; `take` slices them into batches."""

    text: TextEncoding  # [N, L, D]
    unconditional: TextEncoding  # [N, L', D] negative prompts ("" = unconditional)
    seeds: list[int]
    attributes: list[dict[str, str]]
    stage_latents: list[Tensor] | None = None  # per stage [N, *latent_shape]: replaces the seeds' first draw (interpolation)
    init_image: Tensor | None = None  # [N, 3, R, R] photo to edit, at the base stage's resolution
    mask: Tensor | None = None  # [N, 1, R, R] region to repaint, 1 = repaint
    strength: float = 1.0  # how far from the photo an edit may go: 0 keeps it, 1 ignores it

    def take(self, rows: slice) -> GenerationInputs:
        def cut(text: TextEncoding) -> TextEncoding:
            return TextEncoding(text.token_states[rows], text.mask[rows], text.pooled[rows])

        return GenerationInputs(cut(self.text), cut(self.unconditional), self.seeds[rows], self.attributes[rows],
                                None if self.stage_latents is None else [n[rows] for n in self.stage_latents],
                                None if self.init_image is None else self.init_image[rows],
                                None if self.mask is None else self.mask[rows], self.strength)

    def latents(self, stage: int) -> Tensor | None:
        return None if self.stage_latents is None else self.stage_latents[stage]


@runtime_checkable
class ImageFamily(Protocol):
    """A loaded model of one family (a stage of the pipeline's cascade). `model` is its network, `info` its model.json (typed), `source` where it was loaded from."""

    family: ClassVar[str]
    conditioning: ClassVar[frozenset[str]]  # of TEXT, ATTRIBUTES, LOW_RES
    samplers: ClassVar[tuple[str, ...]]  # scheduler names its settings may name (the first is its default)
    can_edit: ClassVar[bool]  # SDEdit / inpainting of a photo; a family that cannot is refused up front
    settings_used: ClassVar[frozenset[str]]  # the SamplingSettings fields it reads (size always counts); others are refused
    default_steps: ClassVar[int]  # num_inference_steps when a caller sets none (a few-step student: 4)

    model: nn.Module
    info: ModelInfo
    source: str

    @classmethod
    def from_files(cls, files: ModelFiles, device: str | torch.device, dtype: torch.dtype) -> ImageFamily:
        """Build the network its files describe (checked before anything is allocated) and load the weights."""
        ...

    @property
    def resolution(self) -> int: ...

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """The shape of one image's starting draw (what interpolation slerps between two seeds)."""
        ...

    @property
    def attribute_vocab(self) -> dict[str, list[str]]: ...

    def draw_latents(self, rngs: Sequence[torch.Generator], settings: SamplingSettings) -> Tensor:
        """Each image's starting draw [N, *latent_shape] from its own random number generator: what `generate` starts from and what
        interpolation slerps between (so a frame at either end equals the single image of that seed)."""
        ...

    def steps_per_image(self, settings: SamplingSettings, strength: float = 1.0) -> int:
        """Network evaluations per image for `settings` (progress bars and ETAs)."""
        ...

    def generate(self, inputs: GenerationInputs, settings: SamplingSettings, rngs: Sequence[torch.Generator],
                 stage: int = 0, low_res: Tensor | None = None, preview: StepCallback | None = None) -> Tensor:
        """Images [N, 3, R, R] in [-1, 1] for `inputs`; `low_res` [N, 3, r, r] is the previous stage's output for
        a family that conditions on it; `stage` picks this stage's latents out of `inputs`; `rngs` holds one
        torch.Generator per image, drawn from in a fixed order."""
        ...

    def settings_record(self, settings: SamplingSettings) -> dict[str, Any]:
        """The settings this family reads, with its defaults filled in: what a report records of how its images were made."""
        ...

    def card_line(self) -> str:
        """One line for the model card saying how the family makes its images (e.g. its noise schedule)."""
        ...

    def write(self, directory: Any, dtype: str) -> ModelInfo:
        """Its model files (weights + model.json) into an existing folder."""
        ...


def attribute_ids(vocab: dict[str, list[str]], attributes: Sequence[dict[str, str]], device: torch.device) -> Tensor | None:
    """[N, K] ids of a model's attribute vocabulary (0 = none; 'any' or '' leave it none); names or values it does not
    know raise PipelineInputError. None for a model trained without attributes."""
    if not vocab:
        return None
    names = list(vocab)
    ids = torch.zeros(len(attributes), len(names), dtype=torch.long)
    for row, wanted in enumerate(attributes):
        for name, value in wanted.items():
            if name not in vocab:
                raise PipelineInputError(f"attribute '{name}' is not one this model knows ({', '.join(names)})")
            values = vocab[name]
            if value in (None, "", "any"):
                continue
            matches = [i for i, known in enumerate(values) if known.lower() == str(value).lower()]
            if not matches:
                shown = ", ".join(values[:20]) + (" ..." if len(values) > 20 else "")
                raise PipelineInputError(f"attribute {name}='{value}' is not in the model's vocabulary ({shown})")
            ids[row, names.index(name)] = matches[0] + 1
    return ids.to(device)


Generator = ImageFamily  # the protocol's earlier name, kept for code that imports it (evaluation.restoration)

__all__ = ["ATTRIBUTES", "GenerationInputs", "Generator", "ImageFamily", "LOW_RES", "StepCallback", "TEXT", "attribute_ids"]
