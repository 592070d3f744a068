"""The diffusion family behind the image-family interface (fashiongen.generators.ImageFamily): a caption-conditioned
UNet sampled with classifier-free guidance, and its super-resolution stage, which also conditions on the upsampled
previous stage.

    generator = DiffusionGenerator.from_files(read_model_files("runs/001-small64/export"), "cpu", torch.float32)
    images = generator.generate(inputs, SamplingSettings(scheduler="ddim"), rngs)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Sequence

import torch
from torch import Tensor

from ..config import Config
from ..generators import ATTRIBUTES, LOW_RES, TEXT, GenerationInputs, StepCallback, attribute_ids
from ..models import FashionUNet, build_model, check_description, get_spec
from ..models.files import ModelFileError, ModelFiles, ModelInfo, training_description, write_model_files
from ..models.runtime import fast_forward
from ..settings import DEFAULT_STEPS, PipelineInputError, SamplingSettings
from .sampling import Inpainting, noise_from, sample
from .schedule import SAMPLERS, diffusion_settings, make_sampler
from .superres import low_res_condition, upsample


def model_description(model: FashionUNet, config: Config, text_identity: str,
                      training: dict[str, Any] | None = None) -> dict[str, Any]:
    """model.json without its weights entry: everything that rebuilds and describes a diffusion model."""
    return {"family": "superres" if model.super_resolution else "diffusion", "model": model.description(),
            "diffusion": diffusion_settings(config.model),
            **training_description(config, text_identity, model.description()["text_dim"], training)}


def _network_from_checkpoint(files: ModelFiles) -> tuple[FashionUNet, ModelInfo]:
    """A checkpoint's network rebuilt from its resolved config and state.json, with the model.json an export would have."""
    config, state = files.config, files.state
    assert config is not None
    vocab = state.get("attribute_vocab") or {}
    try:
        spec = get_spec(config.model.name)
        check_description({"spec": {**spec.__dict__, "block_out_channels": list(spec.block_out_channels)},
                           "resolution": config.data.resolution, "text_dim": state.get("text_dim"),
                           "pooled_text": config.model.pooled_text, "attribute_vocab": vocab})
        model = build_model(config.model, config.data.resolution, state["text_dim"], vocab)
    except (ValueError, TypeError, KeyError) as error:
        raise ModelFileError(f"{files.where}: {error}") from None
    raw = model_description(model, config, state["text_identity"], files.training)
    raw["weights"] = {"file": "ema.safetensors", "dtype": "float32", "sha256": files.weights_sha256}
    return model, ModelInfo.from_dict(raw, files.where)


class DiffusionGenerator:
    """A text (and attribute) conditioned diffusion UNet; edits photos by SDEdit, with a mask RePaint-style."""

    family: ClassVar[str] = "diffusion"
    conditioning: ClassVar[frozenset[str]] = frozenset({TEXT, ATTRIBUTES})
    samplers: ClassVar[tuple[str, ...]] = tuple(SAMPLERS)
    deterministic_samplers: ClassVar[tuple[str, ...]] = tuple(name for name in SAMPLERS if name != "ddpm")
    can_edit: ClassVar[bool] = True
    settings_used: ClassVar[frozenset[str]] = frozenset({"num_inference_steps", "guidance_scale", "scheduler", "negative_prompt"})
    default_steps: ClassVar[int] = DEFAULT_STEPS

    def __init__(self, model: FashionUNet, info: ModelInfo, source: str) -> None:
        if model.super_resolution != (self.family == "superres"):
            raise ModelFileError(f"{source}: model.json's family is {info.family}, but its network "
                                 f"{'is' if model.super_resolution else 'is not'} a super-resolution UNet")
        self.model = model
        self.denoiser: Any = model  # what sample() calls: the module itself, or a faster runtime of it (use_runtime)
        self.runtime = {"runtime": "eager", "dtype": str(next(model.parameters()).dtype).replace("torch.", "")}
        self.info = info
        self.source = source
        self.diffusion = info.section("diffusion")
        if not self.diffusion:
            raise ModelFileError(f"{source}: diffusion: missing or not an object")

    @classmethod
    def from_files(cls, files: ModelFiles, device: str | torch.device, dtype: torch.dtype) -> DiffusionGenerator:
        if files.info is None:
            model, info = _network_from_checkpoint(files)
        else:
            info = files.info
            try:
                model = FashionUNet.from_description(info.network)
            except (ValueError, TypeError, KeyError) as error:
                raise ModelFileError(f"{files.where}: {error}") from None
        what = "EMA weights do not fit the checkpoint's config" if files.info is None else \
            "weights do not fit the architecture in model.json"
        try:
            model.load_state_dict({k: v.float() for k, v in files.state_dict.items()}, strict=True)
        except (RuntimeError, OSError) as error:
            weights = files.directory / (info.weights.file if info.weights else "")
            raise ModelFileError(f"{weights}: {what} ({error})") from None
        return cls(model.to(device=device, dtype=dtype).eval().requires_grad_(False), info, str(files.directory))

    # ------------------------------------------------------------------ facts

    @property
    def resolution(self) -> int:
        return self.model.resolution

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return (3, self.resolution, self.resolution)

    @property
    def attribute_vocab(self) -> dict[str, list[str]]:
        return self.model.attribute_vocab

    def settings_record(self, settings: SamplingSettings) -> dict[str, Any]:
        return {field: getattr(settings, field) for field in sorted(self.settings_used | {"size"})}

    @property
    def super_resolution(self) -> bool:
        return LOW_RES in self.conditioning

    @property
    def sha256(self) -> str:
        return self.info.sha256

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def steps_per_image(self, settings: SamplingSettings, strength: float = 1.0) -> int:
        steps = settings.num_inference_steps
        return max(1, min(steps, round(steps * strength))) if strength < 1.0 else steps

    def card_line(self) -> str:
        """The family's own line in a model card: how its images are made."""
        d = self.diffusion
        return (f"diffusion: {d['prediction_type']}, {d['beta_schedule']} betas, {d['num_train_timesteps']} steps"
                + (", zero terminal SNR" if d.get("rescale_betas_zero_snr") else ""))

    def write(self, directory: Path, dtype: str) -> ModelInfo:
        return write_model_files(self.model.state_dict(), self.info, directory, dtype)

    # ------------------------------------------------------------------ sampling

    def draw_latents(self, rngs: Sequence[torch.Generator], settings: SamplingSettings) -> Tensor:
        return noise_from(list(rngs), self.latent_shape)  # [N, 3, R, R] standard normal

    def check_sampler(self, settings: SamplingSettings) -> None:
        if settings.scheduler not in self.samplers:
            raise PipelineInputError(f"scheduler '{settings.scheduler}' is not one of {', '.join(self.samplers)}")

    def use_runtime(self, runtime: str = "auto", dtype: str = "auto", cache_dir: str | Path | None = None) -> dict[str, str]:
        """Sample through `self.model` on a faster runtime (models.runtime.fast_forward; self.model stays the module).
        Returns what was used after any fallback, e.g. {"runtime": "onnxruntime", "dtype": "float32"}."""
        forward = fast_forward(self.model, self.sha256, runtime, dtype, cache_dir)
        self.denoiser, self.runtime = forward, forward.description
        return self.runtime

    def generate(self, inputs: GenerationInputs, settings: SamplingSettings, rngs: Sequence[torch.Generator],
                 stage: int = 0, low_res: Tensor | None = None, preview: StepCallback | None = None) -> Tensor:
        self.check_sampler(settings)
        device = next(self.model.parameters()).device
        text, unconditional = inputs.text.to(device), inputs.unconditional.to(device)
        noise = self.draw_latents(rngs, settings).to(device)  # drawn even when replaced: later draws stay put
        if (latents := inputs.latents(stage)) is not None:
            noise = latents.to(device)
        scheduler = make_sampler(settings.scheduler, self.diffusion)
        common: dict[str, Any] = dict(num_inference_steps=settings.num_inference_steps, guidance_scale=settings.guidance_scale,
                                      attribute_ids=attribute_ids(self.attribute_vocab, inputs.attributes, device),
                                      generator=list(rngs), preview=preview)
        if low_res is not None or self.super_resolution:
            return self._upscale(text, unconditional, noise, scheduler, low_res, common)
        if inputs.init_image is None:
            return sample(self.denoiser, scheduler, text, unconditional, noise, **common)
        steps = settings.num_inference_steps
        start_step = steps - min(round(steps * inputs.strength), steps)
        photo = inputs.init_image.to(device)
        inpainting = None
        if inputs.mask is not None:
            inpainting = Inpainting(photo, inputs.mask.to(device), noise_from(list(rngs), self.latent_shape, device))
        return sample(self.denoiser, scheduler, text, unconditional, noise, start_step=start_step, init_image=photo,
                      inpainting=inpainting, **common)

    def _upscale(self, text: Any, unconditional: Any, noise: Tensor, scheduler: Any, low_res: Tensor | None,
                 common: dict[str, Any]) -> Tensor:
        raise PipelineInputError(f"{self.source}: a {self.family} model does not take a low-res image")


class SuperResolutionGenerator(DiffusionGenerator):
    """A diffusion stage that conditions on the previous stage's images, upsampled and degraded as in training."""

    family: ClassVar[str] = "superres"
    conditioning: ClassVar[frozenset[str]] = frozenset({TEXT, ATTRIBUTES, LOW_RES})
    can_edit: ClassVar[bool] = False  # it refines whatever the base stage made, edited or not

    @property
    def low_res_resolution(self) -> int:
        return int(self.info.config["model"]["low_res_resolution"])

    def _upscale(self, text: Any, unconditional: Any, noise: Tensor, scheduler: Any, low_res: Tensor | None,
                 common: dict[str, Any]) -> Tensor:
        if low_res is None:
            raise PipelineInputError(f"{self.source}: a super-resolution stage needs the previous stage's images")
        condition = low_res_condition(upsample(low_res.to(noise.device), self.resolution), self.low_res_resolution)
        return sample(self.denoiser, scheduler, text, unconditional, noise, low_res=condition, **common)


__all__ = ["DiffusionGenerator", "SuperResolutionGenerator", "model_description"]
