"""settings.resolve and settings.resolve_seeds: the one way sampling settings are fitted to a family and the one way
a request's seeds are made; and the model card's training provenance (pipeline.publishing)."""

from __future__ import annotations

import pytest
import torch

from fashiongen.diffusion.generator import DiffusionGenerator
from fashiongen.diffusion.student import StudentGenerator
from fashiongen.gan.generator import GANGenerator
from fashiongen.pipeline.publishing import start_models, with_start
from fashiongen.settings import DEFAULT_STEPS, PipelineInputError, SamplingSettings, resolve, resolve_seeds

# resolve reads only what a family's class says of itself (samplers, settings_used, default_steps), so the classes do


def test_keywords_left_unset_take_the_familys_defaults() -> None:
    assert resolve(DiffusionGenerator) == SamplingSettings(DEFAULT_STEPS, scheduler="dpm++")
    assert resolve(StudentGenerator) == SamplingSettings(StudentGenerator.default_steps, scheduler=StudentGenerator.samplers[0])
    assert resolve(GANGenerator).scheduler == GANGenerator.samplers[0]  # no dpm++: the family's first sampler
    assert resolve(DiffusionGenerator, num_inference_steps=7, scheduler=None, guidance_scale=1.5) == \
        SamplingSettings(7, 1.5, "dpm++")


def test_settings_are_checked_against_the_familys_samplers_and_not_mixed_with_keywords() -> None:
    with pytest.raises(PipelineInputError, match="scheduler 'lcm' is not one of ddim"):
        resolve(DiffusionGenerator, scheduler="lcm")
    with pytest.raises(PipelineInputError, match="scheduler 'dpm\\+\\+' is not one of lcm"):
        resolve(StudentGenerator, SamplingSettings())
    with pytest.raises(PipelineInputError, match="give settings or guidance_scale, not both"):
        resolve(DiffusionGenerator, SamplingSettings(), guidance_scale=2.0)
    given = SamplingSettings(5, 2.0, "ddim")
    assert resolve(DiffusionGenerator, given) is given


def test_edge_settings_are_fitted_to_the_family_naming_what_it_does_not_use() -> None:
    edge = SamplingSettings(9, 2.0, "ddim", size=64)
    assert resolve(DiffusionGenerator, edge, given={"num_inference_steps", "scheduler"}) == edge
    assert resolve(DiffusionGenerator, edge, given=set()) == SamplingSettings(DEFAULT_STEPS, 2.0, "dpm++", size=64)
    assert resolve(StudentGenerator, edge, given={"size"}).num_inference_steps == StudentGenerator.default_steps
    with pytest.raises(PipelineInputError, match="^--guidance: this model \\(gan\\) does not use it; it takes truncation$"):
        resolve(GANGenerator, edge, given={"guidance_scale", "size"}, names={"guidance_scale": "--guidance"})


def test_seeds_from_a_seed_a_list_generators_or_at_random() -> None:
    assert resolve_seeds(3, 5) == [5, 6, 7]
    assert resolve_seeds(2, [9, 4]) == [9, 4]
    drawn = resolve_seeds(2, rngs=torch.Generator().manual_seed(42))
    assert drawn == resolve_seeds(2, rngs=torch.Generator().manual_seed(42)) and drawn[0] != drawn[1]
    each = resolve_seeds(2, rngs=[torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)])
    assert each[0] == each[1]  # one draw from each generator
    fresh = resolve_seeds(4)
    assert fresh == list(range(fresh[0], fresh[0] + 4))
    for seed, rngs, message in ((1, torch.Generator(), "give seed or generator, not both"), ([1], None, "got 1 seeds for 2"),
                                (None, [torch.Generator()], "got 1 generators for 2"), ([0, -1], None, "seed 1 must be"),
                                (2**64 - 1, None, "seed must be between 0 and \\d+ \\(2\\*\\*64 - 2\\)")):
        with pytest.raises(PipelineInputError, match=message):
            resolve_seeds(2, seed, rngs)


def test_a_card_counts_what_the_start_models_saw() -> None:
    grandparent = {"steps": 100, "images_seen": 800, "path": "a", "sha256": "0" * 64}
    parent = {"steps": 50, "images_seen": None, "path": "b", "sha256": "1" * 64, "initialised_from": grandparent}
    run = {"steps": 10, "images_seen": 80, "initialised_from": parent}
    assert start_models(run) == [parent, grandparent] and start_models({"steps": 1}) == []
    assert with_start(run, "steps") == "160 (100 + 50 + 10)"
    assert with_start(run, "images_seen") == "80"  # a start model that did not count it: this run's own count only
    assert with_start({}, "steps") == "?"
