"""The settings currency: what besides prompt and seed decides an image, checked once where it is made.

    settings = SamplingSettings.parse(num_inference_steps=options.steps, guidance_scale=options.guidance,
                                      names={"num_inference_steps": "--steps"})          # at the edge: CLI, app, API
    images = pipe.generate_images(prompts, image_seeds(0, len(prompts)), settings)      # passed through as it is

A SamplingSettings cannot hold an out-of-range value: construction checks it against the library's bounds
(SamplingLimits()); an edge that serves the public (the app) passes tighter limits and its own names for the
fields, so its messages speak the page's language. Whether the scheduler is one the model's family has is the
family's to say (pipeline.samplers); the name here is only checked to be a name.

    settings = resolve(stage, num_inference_steps=4)  # fitted to a loaded model: its samplers, defaults, fields it reads
    seeds = resolve_seeds(count, seed, rngs)         # one seed per image, from a seed, a list, generators or at random
"""

from __future__ import annotations

import dataclasses
import math
import secrets
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping, Protocol

import numpy as np
import torch
from .errors import UserError

DEFAULT_SAMPLER = "dpm++"  # DPM-Solver++(2M): the best images per step of the diffusion samplers (benchmarks/README.md)
DEFAULT_STEPS = 20
DEFAULT_GUIDANCE = 3.0
# Seeds are unsigned 64-bit: torch.Generator.manual_seed takes [-2**63, 2**64) but maps a negative seed s to
# 2**64 + s, so -1 and 2**64 - 1 would make the same image under two recorded seeds. Negative seeds are refused.
MAX_SEED = 2**64 - 1


class PipelineInputError(UserError, ValueError):
    """A prompt, setting or input image the pipeline cannot use; the message names which and why."""


@dataclass(frozen=True)
class SamplingLimits:
    """The range each sampling setting may take: the library's bounds by default; a public server passes tighter ones."""

    min_steps: int = 1
    max_steps: int = 1000
    max_guidance: float = 50.0
    min_size: int = 8
    max_size: int = 4096


LIBRARY_LIMITS = SamplingLimits()


def check_range(name: str, value: Any, low: float, high: float | None = None, unit: str = "") -> None:
    """Raise PipelineInputError naming `name` unless `value` is a (finite) number in [low, high]."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not number or value < low or (high is not None and value > high):
        bounds = f"between {low:g} and {high:g}" if high is not None else f">= {low:g}"
        raise PipelineInputError(f"{name} must be {bounds}{' ' + unit if unit else ''}, got {value!r}")


def _check_settings(values: Mapping[str, Any], names: Mapping[str, str], limits: SamplingLimits,
                    samplers: tuple[str, ...] | None) -> None:
    def name(field: str) -> str:
        return names.get(field, field)

    scheduler = values["scheduler"]
    if not isinstance(scheduler, str) or not scheduler or (samplers is not None and scheduler not in samplers):
        known = f" is not one of {', '.join(samplers)}" if samplers is not None else " must be a sampler's name"
        raise PipelineInputError(f"{name('scheduler')} '{scheduler}'{known}")
    steps = values["num_inference_steps"]
    if isinstance(steps, float) and steps.is_integer():
        steps = int(steps)
    if not isinstance(steps, (int, np.integer)) or isinstance(steps, bool):
        raise PipelineInputError(f"{name('num_inference_steps')} must be a whole number, got {steps!r}")
    check_range(name("num_inference_steps"), int(steps), limits.min_steps, limits.max_steps)
    check_range(name("guidance_scale"), values["guidance_scale"], 0.0, limits.max_guidance, "(1 = no guidance)")
    if not isinstance(values["negative_prompt"], str):
        raise PipelineInputError(f"{name('negative_prompt')} must be text, got {type(values['negative_prompt']).__name__}")
    if values["size"] is not None:
        check_range(name("size"), values["size"], limits.min_size, limits.max_size, "px")
    if values["truncation"] is not None:
        check_range(name("truncation"), values["truncation"], 0.0, 10.0, "std (0 = none)")


@dataclass(frozen=True)
class SamplingSettings:
    """Everything besides prompt and seed that decides an image (written to manifests and submissions)."""

    num_inference_steps: int = DEFAULT_STEPS
    guidance_scale: float = DEFAULT_GUIDANCE
    scheduler: str = DEFAULT_SAMPLER
    negative_prompt: str = ""
    size: int | None = None  # output size in px; None = the last stage's resolution
    truncation: float | None = None  # GAN: latent values beyond this many std are redrawn; None = the model's default

    def __post_init__(self) -> None:
        _check_settings(asdict(self), {}, LIBRARY_LIMITS, None)
        object.__setattr__(self, "num_inference_steps", int(self.num_inference_steps))
        object.__setattr__(self, "guidance_scale", float(self.guidance_scale))

    @classmethod
    def parse(cls, *, names: Mapping[str, str] | None = None, limits: SamplingLimits = LIBRARY_LIMITS,
              samplers: tuple[str, ...] | None = None, **values: Any) -> SamplingSettings:
        """Settings from an edge's values, checked once: `names` gives fields the names the caller knows them by
        (sample.py: {"num_inference_steps": "--steps"}), `limits` its bounds, `samplers` the model's sampler names."""
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise TypeError(f"unknown sampling settings: {', '.join(sorted(unknown))}")
        complete = {**_defaults(), **values}
        _check_settings(complete, names or {}, limits, samplers)
        return cls(**complete)

    def to_dict(self) -> dict[str, Any]:
        """What manifests and submissions record; `truncation` only when set, so records made before it existed
        still compare equal."""
        values = asdict(self)
        if values["truncation"] is None:
            del values["truncation"]
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], where: str = "settings") -> SamplingSettings:
        """Settings recorded in a manifest or submission; PipelineInputError naming `where` when they are not valid."""
        if not isinstance(values, Mapping):
            raise PipelineInputError(f"{where}: expected an object of sampling settings")
        known = {f.name for f in fields(cls)}
        try:
            return cls.parse(**{key: value for key, value in values.items() if key in known})
        except PipelineInputError as error:
            raise PipelineInputError(f"{where}: {error}") from None


def _defaults() -> dict[str, Any]:
    return {f.name: f.default for f in fields(SamplingSettings)}


def check_seeds(name: str, first: Any, count: int = 1) -> None:
    """Raise PipelineInputError unless the seeds first .. first + count - 1 all lie in [0, 2**64)."""
    if isinstance(first, bool) or not isinstance(first, (int, np.integer)):
        raise PipelineInputError(f"{name} must be an integer, got {first!r}")
    first, count = int(first), max(count, 1)
    if count == 1 and not 0 <= first <= MAX_SEED:
        raise PipelineInputError(f"{name} must be between 0 and 2**64 - 1, got {first}")
    if not 0 <= first <= MAX_SEED - count + 1:
        raise PipelineInputError(f"{name} must be between 0 and {MAX_SEED - count + 1} (2**64 - {count}): its {count} images "
                                 f"get seeds {first} .. {first + count - 1}, which must lie in [0, 2**64 - 1]; got {first}")


def image_seeds(first: Any, count: int, name: str = "seed") -> list[int]:
    """The seed rule: image k of a request whose seed is `first` gets seed first + k, so an image is the same whatever
    else is in its batch and a request for more images extends, never changes, a smaller one. Checked in [0, 2**64)."""
    check_seeds(name, first, count)
    return [int(first) + k for k in range(count)]


class SettingsFamily(Protocol):
    """What a family (generators.ImageFamily) says about its settings: what resolve() fits settings to."""

    @property
    def family(self) -> str: ...

    @property
    def samplers(self) -> tuple[str, ...]: ...  # scheduler names its settings may name

    @property
    def settings_used(self) -> frozenset[str]: ...  # the SamplingSettings fields it reads (size always counts)

    @property
    def default_steps(self) -> int: ...


def default_sampler(samplers: Sequence[str]) -> str:
    """DEFAULT_SAMPLER where a family has it, else the family's first."""
    return DEFAULT_SAMPLER if DEFAULT_SAMPLER in samplers else samplers[0]


def resolve(family: SettingsFamily, settings: SamplingSettings | None = None, *, given: Collection[str] | None = None,
            names: Mapping[str, str] | None = None, **values: Any) -> SamplingSettings:
    """The settings a model of `family` samples with, checked once, from one of:
    - keywords (`values`; None = the family's default), checked against the library's bounds and the family's samplers;
    - `settings` as built at an edge, its scheduler checked to be the family's (not together with keywords);
    - `settings` an edge built before the model was loaded, with `given` the fields its caller set explicitly: one the
      family does not use is refused (named as the caller knows it, `names`), an unset scheduler and step count become
      the family's defaults."""
    keywords = {key: value for key, value in values.items() if value is not None}
    if settings is None:
        keywords.setdefault("scheduler", default_sampler(family.samplers))
        keywords.setdefault("num_inference_steps", family.default_steps)
        return SamplingSettings.parse(samplers=family.samplers, **keywords)
    if keywords:
        raise PipelineInputError(f"give settings or {', '.join(sorted(keywords))}, not both")
    if given is not None:
        settings = _fitted(family, settings, given, names or {})
    if settings.scheduler not in family.samplers:
        raise PipelineInputError(f"scheduler '{settings.scheduler}' is not one of {', '.join(family.samplers)}")
    return settings


def _fitted(family: SettingsFamily, settings: SamplingSettings, given: Collection[str],
            names: Mapping[str, str]) -> SamplingSettings:
    """Edge settings fitted to a family: given fields it does not use refused, unset scheduler and steps its defaults."""
    unused = sorted(set(given) - set(family.settings_used) - {"size"})
    if unused:
        takes = ", ".join(names.get(f, f) for f in sorted(family.settings_used)) or "no sampling settings"
        raise PipelineInputError(f"{', '.join(names.get(f, f) for f in unused)}: this model ({family.family}) does not use "
                                 f"{'it' if len(unused) == 1 else 'them'}; it takes {takes}")
    if "scheduler" not in given:
        settings = dataclasses.replace(settings, scheduler=default_sampler(family.samplers))
    if "num_inference_steps" not in given:
        settings = dataclasses.replace(settings, num_inference_steps=family.default_steps)
    return settings


def resolve_seeds(count: int, seed: int | Sequence[int] | None = None,
                  rngs: torch.Generator | Sequence[torch.Generator] | None = None) -> list[int]:
    """One seed per image: `seed` (image i gets seed + i), one seed per image, fresh random seeds (recorded, so still
    reproducible) when neither is given, or drawn from `rngs` (one torch.Generator, or one per image: the
    diffusers-style alternative to a seed, so the same generator state gives the same images)."""
    if rngs is not None:
        if seed is not None:
            raise PipelineInputError("give seed or generator, not both")
        seed = _drawn_seeds(rngs, count)
    if seed is None:
        seed = secrets.randbelow(2**31 - count)
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return image_seeds(seed, count)
    seeds = [int(s) for s in seed]
    if len(seeds) != count:
        raise PipelineInputError(f"got {len(seeds)} seeds for {count} images")
    for number, one in enumerate(seeds):
        check_seeds(f"seed {number}", one)
    return seeds


def _drawn_seeds(rngs: torch.Generator | Sequence[torch.Generator], count: int) -> list[int]:
    """One seed per image drawn from a generator (or from each of `count` generators)."""
    generators = [rngs] * count if isinstance(rngs, torch.Generator) else list(rngs)
    if len(generators) != count:
        raise PipelineInputError(f"got {len(generators)} generators for {count} images")
    return [int(torch.randint(0, 2**31 - 1, (1,), generator=g, device=g.device).item()) for g in generators]


__all__ = ["DEFAULT_GUIDANCE", "DEFAULT_SAMPLER", "DEFAULT_STEPS", "LIBRARY_LIMITS", "MAX_SEED", "PipelineInputError",
           "SamplingLimits", "SamplingSettings", "SettingsFamily", "check_range", "check_seeds", "default_sampler",
           "image_seeds", "resolve", "resolve_seeds"]
