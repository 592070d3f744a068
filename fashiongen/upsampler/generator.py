"""The upsampler family behind the generator interface (fashiongen.generators): a stage that follows a base model
(diffusion or GAN) and brings its 64 px images to 256 px in one forward, guided by the caption's pooled embedding.

    pipe = FashionGenPipeline.from_pretrained("fashiongen/pretrained")            # its folder carries upsampler-256/
    images = pipe("red floral summer dress", size=256)                             # base at 64 px, then this stage

It draws nothing (no latent of its own), so an image at 256 px depends on the same seed as its 64 px design, and
interpolation, editing and submissions at 256 px pass through it unchanged.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import Config
from ..models.adversarial import discriminator_file, read_discriminator, write_discriminator
from ..generators import LOW_RES, TEXT, GenerationInputs, StepCallback
from ..models.files import ModelFileError, ModelFiles, ModelInfo, training_description, write_model_files
from ..models.runtime import low_precision, resolve, torch_module
from ..settings import DEFAULT_STEPS, PipelineInputError, SamplingSettings
from .networks import Upsampler, back_project, get_upsampler_spec

BACK_PROJECTION_STEPS = 2  # box-average consistency with the 64 px design (networks.back_project)
logger = logging.getLogger(__name__)


def upsampler_description(model: Upsampler, config: Config, text_identity: str, input_resolution: int,
                          training: dict[str, Any] | None = None) -> dict[str, Any]:
    """model.json without its weights entry: everything that rebuilds and describes an upsampler."""
    return {"family": "upsampler", "model": model.description(),
            "upsampler": {"input_resolution": input_resolution, "scale": model.spec.scale},
            **training_description(config, text_identity, model.text_dim, training)}


class UpsamplerGenerator:
    """A one-forward 4x super-resolution stage (ESRGAN-style, caption-conditioned; see upsampler/networks.py). Like a
    GAN it keeps track of the discriminator that trained it (exports carry it), so train.init_from can continue it."""

    family: ClassVar[str] = "upsampler"
    conditioning: ClassVar[frozenset[str]] = frozenset({TEXT, LOW_RES})
    samplers: ClassVar[tuple[str, ...]] = ()  # a stage after the base: it follows the base model's sampler, whatever it is
    can_edit: ClassVar[bool] = False  # it refines whatever the base stage made, edited or not
    settings_used: ClassVar[frozenset[str]] = frozenset()
    default_steps: ClassVar[int] = DEFAULT_STEPS  # not used: one forward

    def __init__(self, model: Upsampler, info: ModelInfo, source: str, discriminator: Path | None = None) -> None:
        self.model, self.info, self.source = model, info, source
        self.discriminator_file = discriminator
        self.network = model  # what upsample() runs: the module itself, or its fast copy (use_runtime)
        self.runtime = {"runtime": "eager", "dtype": str(next(model.parameters()).dtype).replace("torch.", "")}
        section = info.section("upsampler")
        self.input_resolution = section.get("input_resolution")
        if not isinstance(self.input_resolution, int) or isinstance(self.input_resolution, bool) or \
                not 4 <= self.input_resolution <= 4096:
            raise ModelFileError(f"{source}: upsampler.input_resolution: expected an integer between 4 and 4096, "
                                 f"got {self.input_resolution!r}")

    @classmethod
    def from_files(cls, files: ModelFiles, device: str | torch.device, dtype: torch.dtype) -> UpsamplerGenerator:
        try:
            if files.info is not None:
                info = files.info
                model = Upsampler.from_description(info.network)
            else:  # a checkpoint: rebuilt from its config and state.json
                config, state = files.config, files.state
                assert config is not None
                model = Upsampler(get_upsampler_spec(config.model.name), state["text_dim"])
                raw = upsampler_description(model, config, state["text_identity"], config.model.low_res_resolution,
                                            files.training)
                raw["weights"] = {"file": "ema.safetensors", "dtype": "float32", "sha256": files.weights_sha256}
                info = ModelInfo.from_dict(raw, files.where)
        except (ValueError, TypeError, KeyError) as error:
            raise ModelFileError(f"{files.where}: {error}") from None
        try:
            model.load_state_dict({k: v.float() for k, v in files.state_dict.items()}, strict=True)
        except (RuntimeError, OSError) as error:
            raise ModelFileError(f"{files.directory}: weights do not fit the upsampler described ({error})") from None
        return cls(model.to(device=device, dtype=dtype).eval().requires_grad_(False), info, str(files.directory),
                   discriminator_file(files, "upsampler"))

    # ------------------------------------------------------------------ facts

    @property
    def resolution(self) -> int:
        return self.input_resolution * self.model.spec.scale

    @property
    def latent_shape(self) -> tuple[int]:
        return (0,)  # nothing drawn: the image is a function of its input and caption

    @property
    def attribute_vocab(self) -> dict[str, list[str]]:
        return {}

    @property
    def sha256(self) -> str:
        return self.info.sha256

    def steps_per_image(self, settings: SamplingSettings, strength: float = 1.0) -> int:
        return 1

    def settings_record(self, settings: SamplingSettings) -> dict[str, Any]:
        return {"size": settings.size}

    def card_line(self) -> str:
        return (f"upsampler: {self.input_resolution} -> {self.resolution} px in one forward "
                f"({'with' if self.model.text is not None else 'without'} the caption), back-projected onto its input")

    def discriminator_state(self) -> dict[str, Tensor] | None:
        """The discriminator's float32 weights, checked against model.json's checksum; None when the files have none."""
        return read_discriminator(self.discriminator_file, self.info.section("upsampler").get("discriminator"))

    def write(self, directory: Path, dtype: str) -> ModelInfo:
        section = {k: v for k, v in self.info.section("upsampler").items() if k != "discriminator"}
        if (discriminator := self.discriminator_state()) is not None:
            section["discriminator"] = write_discriminator(discriminator, directory, dtype)
        return write_model_files(self.model.state_dict(), self.info.replace(upsampler=section), directory, dtype)

    # ------------------------------------------------------------------ sampling

    def draw_latents(self, generators: Sequence[torch.Generator], settings: SamplingSettings) -> Tensor:
        return torch.zeros(len(generators), 0)

    def use_runtime(self, runtime: str = "auto", dtype: str = "auto", cache_dir: str | Path | None = None) -> dict[str, str]:
        """Upsample on a faster torch path (models.runtime: channels_last, bf16 where the CPU has fast kernels for it);
        self.model stays the module. There is no exported graph for this family: onnxruntime (auto's choice on a CPU
        without bf16) means eager float32 here. Returns what was used after any fallback."""
        parameter = next(self.model.parameters())
        # (asked for onnxruntime, the base stage warns if it is missing; this stage has no graph and runs eager float32)
        runtime, dtype, notes = resolve("eager" if runtime == "onnxruntime" else runtime, dtype, parameter.device)
        for note in notes:
            logger.warning(note)
        runtime = "eager" if runtime == "onnxruntime" else runtime  # auto's float32 choice without bf16
        self.network, self.runtime = torch_module(self.model, runtime, dtype), {"runtime": runtime, "dtype": dtype}
        return self.runtime

    def upsample(self, low: Tensor, pooled: Tensor | None) -> Tensor:
        """[N, 3, r, r] in [-1, 1] (resized to the input resolution it was trained for when r differs) and pooled caption
        embeddings [N, T] -> [N, 3, R, R] in [-1, 1], float32, whose box average over each 4x4 block is the input's pixel
        (back-projected: a 256 px design shrinks back to the 64 px one it came from)."""
        parameter = next(self.network.parameters())
        dtype = parameter.dtype if self.network is self.model else torch.float32  # a fast copy takes float32 inputs
        low = low.to(parameter.device, dtype)
        if low.shape[-1] != self.input_resolution or low.shape[-2] != self.input_resolution:
            low = F.interpolate(low, size=(self.input_resolution,) * 2, mode="bicubic", align_corners=False,
                                antialias=True).clamp(-1.0, 1.0)
        pooled = None if self.model.text is None or pooled is None else pooled.to(parameter.device, dtype)
        inputs = low.contiguous(memory_format=torch.channels_last) if self.runtime["runtime"] == "channels_last" else low
        with torch.no_grad(), low_precision(self.runtime["dtype"], parameter.device.type):
            high = self.network.sample(inputs, pooled)
        with torch.no_grad():
            return back_project(high.float().contiguous(), low.float(), BACK_PROJECTION_STEPS)

    def generate(self, inputs: GenerationInputs, settings: SamplingSettings, generators: Sequence[torch.Generator],
                 stage: int = 0, low_res: Tensor | None = None, preview: StepCallback | None = None) -> Tensor:
        if low_res is None:
            raise PipelineInputError(f"{self.source}: an upsampler needs the previous stage's images")
        images = self.upsample(low_res, inputs.text.pooled)
        if preview is not None:
            preview(1, 1, images)
        return images


__all__ = ["UpsamplerGenerator", "upsampler_description"]
