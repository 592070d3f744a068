"""The GAN family behind the generator interface (fashiongen.generators): one forward of a caption- and
attribute-conditioned generator per image, its latent z drawn from the image's own seed and truncated.

    generator = GANGenerator.from_files(read_model_files("runs/001-gan64/export"), "cpu", torch.float32)
    images = generator.generate(inputs, SamplingSettings(scheduler="one-step"), generators)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Sequence

import torch
from torch import Tensor

from ..config import Config
from ..generators import ATTRIBUTES, TEXT, GenerationInputs, StepCallback, attribute_ids
from ..models.files import (
    ModelFileError,
    ModelFiles,
    ModelInfo,
    training_description,
    write_model_files,
)
from ..models.adversarial import (  # re-exported: their old home
    CHECKPOINT_DISCRIMINATOR,
    DISCRIMINATOR_FILE,
    discriminator_file,
    read_discriminator,
    write_discriminator,
)
from ..settings import DEFAULT_STEPS, PipelineInputError, SamplingSettings
from .networks import TextGenerator, get_gan_spec

SAMPLER = "one-step"  # the one way a GAN makes an image: what manifests record as its scheduler
INVERSION_STEPS = 200  # editing: Adam steps on z to reconstruct the photo (about 1 s an image for gan-64s on 2 cores)
INVERSION_LR = 0.05
MAX_REDRAWS = 64  # truncation: rounds of redrawing out-of-range latent values before the rest are clamped


def gan_description(model: TextGenerator, config: Config, text_identity: str,
                    training: dict[str, Any] | None = None) -> dict[str, Any]:
    """model.json without its weights entry: everything that rebuilds and describes a GAN generator."""
    return {"family": "gan", "model": model.description(), "gan": {"truncation": config.gan.truncation},
            **training_description(config, text_identity, model.text_dim, training)}


def truncated_normal(generators: Sequence[torch.Generator], shape: tuple[int, ...], truncation: float) -> Tensor:
    """[N, *shape] standard normal draws, one image per generator; with truncation t > 0 every value beyond +-t is
    redrawn from the same generator (a fixed number of rounds, then clamped), so an image still depends on its seed only."""
    rows = []
    for generator in generators:
        z = torch.randn(shape, generator=generator)
        for _ in range(MAX_REDRAWS if truncation > 0 else 0):
            outside = z.abs() > truncation
            if not outside.any():
                break
            z = torch.where(outside, torch.randn(shape, generator=generator), z)
        rows.append(z.clamp(-truncation, truncation) if truncation > 0 else z)
    return torch.stack(rows)


class GANGenerator:
    """A one-forward text-to-image generator (DF-GAN style). It edits a photo by GAN inversion: z is optimised so the
    generator, given the empty caption, reconstructs the photo; the image is then regenerated from that z with the
    condition moved `strength` of the way to the new description (0 = the reconstruction, 1 = the new description
    alone); with a mask, only the masked region changes. It keeps track of the discriminator that trained it (exports
    carry it) so a published GAN can be trained further."""

    family: ClassVar[str] = "gan"
    conditioning: ClassVar[frozenset[str]] = frozenset({TEXT, ATTRIBUTES})
    samplers: ClassVar[tuple[str, ...]] = (SAMPLER,)
    deterministic_samplers: ClassVar[tuple[str, ...]] = (SAMPLER,)
    can_edit: ClassVar[bool] = True
    settings_used: ClassVar[frozenset[str]] = frozenset({"truncation"})
    default_steps: ClassVar[int] = DEFAULT_STEPS  # not used: one forward

    def __init__(self, model: TextGenerator, info: ModelInfo, source: str, discriminator_file: Path | None = None) -> None:
        self.model, self.info, self.source = model, info, source
        self.default_truncation = float(info.section("gan").get("truncation", 1.0))
        self.discriminator_file = discriminator_file  # None: files without one (tests' random GANs, older exports)

    def discriminator_state(self) -> dict[str, Tensor] | None:
        """The discriminator's float32 weights, checked against model.json's checksum; None when the files have none."""
        return read_discriminator(self.discriminator_file, self.info.section("gan").get("discriminator"))

    @classmethod
    def from_files(cls, files: ModelFiles, device: str | torch.device, dtype: torch.dtype) -> GANGenerator:
        try:
            if files.info is not None:
                info = files.info
                model = TextGenerator.from_description(info.network)
            else:  # a checkpoint: rebuilt from its config and state.json
                config, state = files.config, files.state
                assert config is not None
                model = TextGenerator(get_gan_spec(config.model.name), state["text_dim"], state.get("attribute_vocab") or {})
                raw = gan_description(model, config, state["text_identity"], files.training)
                raw["weights"] = {"file": "ema.safetensors", "dtype": "float32", "sha256": files.weights_sha256}
                info = ModelInfo.from_dict(raw, files.where)
        except (ValueError, TypeError, KeyError) as error:
            raise ModelFileError(f"{files.where}: {error}") from None
        try:
            model.load_state_dict({k: v.float() for k, v in files.state_dict.items()}, strict=True)
        except (RuntimeError, OSError) as error:
            raise ModelFileError(f"{files.directory}: weights do not fit the generator described ({error})") from None
        discriminator = discriminator_file(files, "gan")
        return cls(model.to(device=device, dtype=dtype).eval().requires_grad_(False), info, str(files.directory), discriminator)

    # ------------------------------------------------------------------ facts

    @property
    def resolution(self) -> int:
        return self.model.resolution

    @property
    def latent_shape(self) -> tuple[int]:
        return (self.model.spec.z_dim,)

    @property
    def attribute_vocab(self) -> dict[str, list[str]]:
        return self.model.attribute_vocab

    @property
    def sha256(self) -> str:
        return self.info.sha256

    def truncation(self, settings: SamplingSettings) -> float:
        return self.default_truncation if settings.truncation is None else settings.truncation

    def steps_per_image(self, settings: SamplingSettings, strength: float = 1.0) -> int:
        return 1

    def settings_record(self, settings: SamplingSettings) -> dict[str, Any]:
        return {"scheduler": SAMPLER, "size": settings.size, "truncation": self.truncation(settings)}

    def card_line(self) -> str:
        return f"GAN: one generator forward per image, latent truncated at {self.default_truncation:g} std by default"

    def write(self, directory: Path, dtype: str) -> ModelInfo:
        info, discriminator = self.info, self.discriminator_state()
        if discriminator is not None:
            info = info.replace(gan={**info.section("gan"), "discriminator": write_discriminator(discriminator, directory, dtype)})
        return write_model_files(self.model.state_dict(), info, directory, dtype)

    # ------------------------------------------------------------------ sampling

    def draw_latents(self, generators: Sequence[torch.Generator], settings: SamplingSettings) -> Tensor:
        return truncated_normal(generators, self.latent_shape, self.truncation(settings))  # [N, Z]

    def generate(self, inputs: GenerationInputs, settings: SamplingSettings, generators: Sequence[torch.Generator],
                 stage: int = 0, low_res: Tensor | None = None, preview: StepCallback | None = None) -> Tensor:
        if settings.scheduler not in self.samplers:
            raise PipelineInputError(f"scheduler '{settings.scheduler}' is not one of {', '.join(self.samplers)}")
        if inputs.init_image is not None:
            return self._edit(inputs, settings, generators, preview)
        parameter = next(self.model.parameters())
        z = self.draw_latents(generators, settings)
        if (latents := inputs.latents(stage)) is not None:
            z = latents
        ids = attribute_ids(self.attribute_vocab, inputs.attributes, parameter.device)
        with torch.no_grad():
            images = self.model.sample(z.to(parameter.device, parameter.dtype), inputs.text.pooled.to(parameter.device, parameter.dtype), ids)
        images = images.float()
        if preview is not None:
            preview(1, 1, images)
        return images


    def _edit(self, inputs: GenerationInputs, settings: SamplingSettings, generators: Sequence[torch.Generator],
              preview: StepCallback | None) -> Tensor:
        """GAN inversion, then regeneration with the new description (see the class)."""
        assert inputs.init_image is not None
        parameter = next(self.model.parameters())
        device, dtype = parameter.device, parameter.dtype
        photo = inputs.init_image.to(device, dtype)
        with torch.no_grad():
            source = self.model.condition(inputs.unconditional.pooled.clone().to(device, dtype), None)  # "" and no attributes
            target = self.model.condition(inputs.text.pooled.clone().to(device, dtype),
                                          attribute_ids(self.attribute_vocab, inputs.attributes, device))
        z = self.draw_latents(generators, settings).to(device, dtype).requires_grad_(True)  # the seed picks the start
        optimizer = torch.optim.Adam([z], lr=INVERSION_LR)
        with torch.enable_grad():
            for step in range(INVERSION_STEPS):
                out = self.model.from_condition(z, source)
                loss = ((out - photo).abs().mean() + torch.nn.functional.mse_loss(
                    torch.nn.functional.avg_pool2d(out, 4), torch.nn.functional.avg_pool2d(photo, 4)) + 1e-3 * z.pow(2).mean())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if preview is not None and (step + 1) % 50 == 0:
                    preview(step + 1, INVERSION_STEPS + 1, out.detach().float().clamp(-1, 1))
        with torch.no_grad():
            condition = torch.lerp(source, target, inputs.strength)
            images = self.model.from_condition(z.detach(), condition).clamp(-1.0, 1.0).float()
        if inputs.mask is not None:
            mask = inputs.mask.to(images.device, images.dtype)
            images = mask * images + (1 - mask) * photo.float()
        if preview is not None:
            preview(INVERSION_STEPS + 1, INVERSION_STEPS + 1, images)
        return images


__all__ = ["DISCRIMINATOR_FILE", "GANGenerator", "SAMPLER", "discriminator_file", "gan_description", "read_discriminator",
           "truncated_normal", "write_discriminator"]
