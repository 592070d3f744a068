import math

import model_helpers
import pytest
import torch
from model_helpers import TEXT_DIM, TINY

from fashiongen.config import ConfigError, ModelConfig
from fashiongen.diffusion import (
    SAMPLERS,
    add_noise,
    alphas_cumprod_of,
    classifier_free_guidance,
    concat_text,
    diffusion_loss,
    diffusion_settings,
    initial_noise,
    make_noise_scheduler,
    make_sampler,
    min_snr_weight,
    pad_tokens,
    sample,
    snr,
    training_target,
)
from fashiongen.diffusion.superres import low_res_condition, upsample
from fashiongen.models import FashionUNet, UNetSpec
from fashiongen.text import TextEncoding

SIZE = 16
COSINE_V = diffusion_settings(ModelConfig())
COSINE_EPS = diffusion_settings(ModelConfig(prediction_type="epsilon"))
LINEAR_EPS = diffusion_settings(ModelConfig(prediction_type="epsilon", beta_schedule="linear"))
ZERO_SNR = diffusion_settings(ModelConfig(zero_terminal_snr=True))
SETTINGS = {"cosine-v": COSINE_V, "cosine-eps": COSINE_EPS, "zero-snr-v": ZERO_SNR}


def tiny_model(seed: int = 0, **kwargs) -> FashionUNet:
    return model_helpers.tiny_model(TINY, SIZE, seed, **kwargs)


def make_text(batch: int = 2, length: int = 4, real: int = 3, seed: int = 1) -> TextEncoding:
    return model_helpers.make_text(batch, length, real, seed)


def clean_images(batch: int = 3, size: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 1.8 - 0.9


def test_settings_are_the_forward_process_of_the_config() -> None:
    assert COSINE_V == {"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2",
                        "prediction_type": "v_prediction", "rescale_betas_zero_snr": False}
    assert ZERO_SNR["rescale_betas_zero_snr"] is True
    scheduler = make_noise_scheduler(COSINE_V)
    assert scheduler.config.prediction_type == "v_prediction" and scheduler.config.clip_sample is False
    assert torch.equal(alphas_cumprod_of(COSINE_V), scheduler.alphas_cumprod)


@pytest.mark.parametrize("settings", [COSINE_V, LINEAR_EPS, ZERO_SNR], ids=["cosine", "linear", "zero-snr"])
def test_add_noise_matches_diffusers(settings: dict) -> None:
    scheduler = make_noise_scheduler(settings)
    clean, noise = clean_images(4), torch.randn(4, 3, 8, 8)
    timesteps = torch.tensor([0, 250, 731, 999])
    ours = add_noise(scheduler.alphas_cumprod, clean, noise, timesteps)
    assert torch.allclose(ours, scheduler.add_noise(clean, noise, timesteps), atol=1e-6)


@pytest.mark.parametrize("settings", [COSINE_V, ZERO_SNR], ids=["cosine", "zero-snr"])
def test_v_target_matches_diffusers_get_velocity(settings: dict) -> None:
    scheduler = make_noise_scheduler(settings)
    clean, noise = clean_images(4), torch.randn(4, 3, 8, 8)
    timesteps = torch.tensor([0, 250, 731, 999])
    target = training_target("v_prediction", scheduler.alphas_cumprod, clean, noise, timesteps)
    assert torch.allclose(target, scheduler.get_velocity(clean, noise, timesteps), atol=1e-6)
    if settings["rescale_betas_zero_snr"]:
        assert torch.allclose(target[-1], -clean[-1], atol=1e-6)  # pure noise at the last step: v = -x_0


def test_epsilon_target_is_the_noise_and_unknown_types_raise() -> None:
    alphas = alphas_cumprod_of(COSINE_EPS)
    clean, noise = clean_images(2), torch.randn(2, 3, 8, 8)
    assert torch.equal(training_target("epsilon", alphas, clean, noise, torch.tensor([3, 900])), noise)
    with pytest.raises(ValueError, match="unknown prediction_type 'sample'"):
        training_target("sample", alphas, clean, noise, torch.tensor([3, 900]))


def test_snr_is_alpha_bar_over_one_minus_alpha_bar() -> None:
    alphas = alphas_cumprod_of(COSINE_V)
    timesteps = torch.tensor([0, 10, 500, 999])
    expected = [alphas[t].item() / (1 - alphas[t].item()) for t in timesteps]
    assert torch.allclose(snr(alphas, timesteps), torch.tensor(expected), rtol=1e-4)
    values = snr(alphas, torch.arange(1000))
    assert values.shape == (1000,) and (values[1:] < values[:-1]).all()  # noisier steps have lower SNR
    assert snr(alphas_cumprod_of(ZERO_SNR), torch.tensor([999])).item() == pytest.approx(0.0, abs=1e-10)


def test_min_snr_weight_by_hand() -> None:
    values = torch.tensor([0.25, 1.0, 5.0, 20.0])
    gamma = 5.0
    epsilon = [min(s, gamma) / s for s in values.tolist()]
    velocity = [min(s, gamma) / (s + 1) for s in values.tolist()]
    assert torch.allclose(min_snr_weight(values, gamma, "epsilon"), torch.tensor(epsilon))
    assert torch.allclose(min_snr_weight(values, gamma, "v_prediction"), torch.tensor(velocity))
    assert min_snr_weight(values, gamma, "epsilon").tolist() == pytest.approx([1.0, 1.0, 1.0, 0.25])
    assert min_snr_weight(values, gamma, "v_prediction").tolist() == pytest.approx([0.2, 0.5, 5 / 6, 5 / 21])
    for off in (0.0, -1.0):
        assert torch.equal(min_snr_weight(values, off, "v_prediction"), torch.ones(4))
    assert min_snr_weight(torch.tensor([0.0]), gamma, "v_prediction").item() == 0.0  # zero-SNR step: finite
    assert torch.isfinite(min_snr_weight(torch.tensor([0.0]), gamma, "epsilon")).all()
    with pytest.raises(ValueError, match="unknown prediction_type"):
        min_snr_weight(values, gamma, "x0")


def test_diffusion_loss_is_per_sample_mse_weighted() -> None:
    generator = torch.Generator().manual_seed(0)
    prediction, target = torch.randn(3, 3, 8, 8, generator=generator), torch.randn(3, 3, 8, 8, generator=generator)
    values = torch.tensor([0.5, 5.0, 50.0])
    mse = torch.stack([((p - t) ** 2).mean() for p, t in zip(prediction, target)])
    plain = diffusion_loss(prediction, target, values, "v_prediction", 0.0)
    assert plain.shape == (3,) and plain.dtype == torch.float32
    assert torch.allclose(plain, mse)
    weighted = diffusion_loss(prediction, target, values, "v_prediction", 5.0)
    assert torch.allclose(weighted, mse * torch.tensor([0.5 / 1.5, 5 / 6, 5 / 51]))
    assert torch.allclose(diffusion_loss(prediction, target, values, "epsilon", 5.0), mse * torch.tensor([1.0, 1.0, 0.1]))
    half = diffusion_loss(prediction.bfloat16(), target.bfloat16(), values, "epsilon", 0.0)
    assert half.dtype == torch.float32 and torch.allclose(half, mse, rtol=0.02)
    assert diffusion_loss(target, target, values, "epsilon", 5.0).abs().max() == 0


def test_zero_terminal_snr_ends_in_pure_noise() -> None:
    assert make_noise_scheduler(ZERO_SNR).alphas_cumprod[-1].item() == pytest.approx(0.0, abs=1e-7)
    assert make_noise_scheduler(COSINE_V).alphas_cumprod[-1].item() > 0
    for name in SAMPLERS:  # samplers keep (almost) the same schedule; some clamp the last step to a tiny alpha_bar
        assert make_sampler(name, ZERO_SNR).alphas_cumprod[-1].item() < 1e-6, name


def test_zero_terminal_snr_needs_v_prediction() -> None:
    with pytest.raises(ConfigError, match=r"model.zero_terminal_snr: .*v_prediction"):
        ModelConfig(zero_terminal_snr=True, prediction_type="epsilon")


def test_make_sampler_unknown_name() -> None:
    with pytest.raises(ValueError, match=r"unknown sampler 'heun'; choose one of ddim, dpm\+\+, euler, ddpm"):
        make_sampler("heun", COSINE_V)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_samplers_share_the_forward_process_and_start_at_the_last_step(name: str) -> None:
    for settings in SETTINGS.values():
        sampler = make_sampler(name, settings)
        assert isinstance(sampler, SAMPLERS[name])
        assert sampler.config.prediction_type == settings["prediction_type"]
        sampler.set_timesteps(3)
        assert int(sampler.timesteps[0]) == settings["num_train_timesteps"] - 1  # trailing spacing
        assert len(sampler.timesteps) == 3


@pytest.mark.parametrize("name", list(SAMPLERS))
@pytest.mark.parametrize("settings_name", ["cosine-v", "zero-snr-v"])
def test_every_sampler_gives_finite_images_with_a_tiny_model(name: str, settings_name: str) -> None:
    model = tiny_model()
    noise = initial_noise([0, 1], (3, SIZE, SIZE))
    generators = [torch.Generator().manual_seed(s) for s in (0, 1)]
    images = sample(model, make_sampler(name, SETTINGS[settings_name]), make_text(), make_text(length=2, real=1, seed=9),
                    noise, num_inference_steps=3, guidance_scale=2.0, generator=generators)
    assert images.shape == (2, 3, SIZE, SIZE) and images.dtype == torch.float32
    assert torch.isfinite(images).all()
    assert images.min() >= -1 and images.max() <= 1


def oracle(settings: dict, clean: torch.Tensor):
    """A perfect denoiser for one known clean batch: it outputs the exact training target."""
    alphas = alphas_cumprod_of(settings).double()

    def model(x, timesteps, *conditioning):
        a = alphas[timesteps].view(-1, 1, 1, 1)
        x0 = clean.double()
        eps = (x.double() - a.sqrt() * x0) / (1 - a).sqrt()
        return training_target(settings["prediction_type"], alphas, x0, eps, timesteps).float()

    return model


@pytest.mark.parametrize("name", list(SAMPLERS))
@pytest.mark.parametrize("settings_name", list(SETTINGS))
def test_samplers_recover_the_image_from_an_exact_training_target(name: str, settings_name: str) -> None:
    settings = SETTINGS[settings_name]
    clean = clean_images(2, size=8)
    generators = [torch.Generator().manual_seed(s) for s in (0, 1)]
    images = sample(oracle(settings, clean), make_sampler(name, settings), make_text(), make_text(),
                    initial_noise([3, 4], (3, 8, 8)), num_inference_steps=4, guidance_scale=1.0, generator=generators)
    assert (images - clean).abs().max() < 1e-4, (name, settings_name)


def test_classifier_free_guidance_formula() -> None:
    conditional, unconditional = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.0, 1.0, 0.5])
    assert torch.equal(classifier_free_guidance(conditional, unconditional, 1.0), conditional)
    assert torch.equal(classifier_free_guidance(conditional, unconditional, 0.0), unconditional)
    assert torch.allclose(classifier_free_guidance(conditional, unconditional, 3.0), torch.tensor([3.0, -8.0, 0.5]))


def test_guidance_one_ignores_the_unconditional() -> None:
    model = tiny_model()
    noise = initial_noise([0, 1], (3, SIZE, SIZE))
    text = make_text()
    empty, negative = make_text(length=2, real=1, seed=5), make_text(length=6, real=6, seed=6)

    def run(uncond: TextEncoding, scale: float) -> torch.Tensor:
        return sample(model, make_sampler("ddim", COSINE_V), text, uncond, noise, num_inference_steps=3, guidance_scale=scale)

    assert torch.equal(run(empty, 1.0), run(negative, 1.0))
    assert not torch.allclose(run(empty, 4.0), run(negative, 4.0), atol=1e-4)
    assert not torch.allclose(run(empty, 4.0), run(empty, 1.0), atol=1e-4)


def test_guidance_zero_is_the_unconditional_model() -> None:
    model = tiny_model(attribute_vocab={"colour": ["Red", "Blue"]})
    noise = initial_noise([0, 1], (3, SIZE, SIZE))
    text, empty = make_text(length=5, real=4), make_text(length=2, real=1, seed=5)
    ids = torch.tensor([[1], [2]])
    guided = sample(model, make_sampler("ddim", COSINE_V), text, empty, noise, 3, guidance_scale=0.0, attribute_ids=ids)
    unconditional = sample(model, make_sampler("ddim", COSINE_V), empty, text, noise, 3, guidance_scale=1.0,
                           attribute_ids=torch.zeros_like(ids))
    assert torch.allclose(guided, unconditional, atol=1e-4)
    conditional = sample(model, make_sampler("ddim", COSINE_V), text, empty, noise, 3, guidance_scale=1.0, attribute_ids=ids)
    assert not torch.allclose(guided, conditional, atol=1e-4)


def test_sampling_a_super_resolution_stage_uses_low_res() -> None:
    spec = UNetSpec((8, 16), layers_per_block=1, head_channels=8, native_resolution=32, norm_num_groups=4, super_resolution=True)
    torch.manual_seed(0)
    model = FashionUNet(spec, SIZE, TEXT_DIM).eval()
    noise = initial_noise([0, 1], (3, SIZE, SIZE))
    low = upsample(torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1, SIZE)

    def run(low_res: torch.Tensor | None) -> torch.Tensor:
        return sample(model, make_sampler("ddim", COSINE_V), make_text(), make_text(seed=4), noise,
                      num_inference_steps=3, guidance_scale=2.0, low_res=low_res)

    assert run(low).shape == (2, 3, SIZE, SIZE)
    assert not torch.allclose(run(low), run(-low), atol=1e-4)
    with pytest.raises(ValueError, match="low-res"):
        run(None)


def test_same_seeds_give_identical_samples() -> None:
    model = tiny_model()
    text, empty = make_text(), make_text(length=2, real=1, seed=5)

    def run(name: str, seeds: list[int]) -> torch.Tensor:
        return sample(model, make_sampler(name, COSINE_V), text, empty, initial_noise(seeds, (3, SIZE, SIZE)), 3,
                      generator=[torch.Generator().manual_seed(s) for s in seeds])

    for name in SAMPLERS:
        first = run(name, [7, 8])
        assert torch.equal(first, run(name, [7, 8])), name
        other = run(name, [7, 9])
        assert torch.allclose(other[0], first[0], atol=1e-4), name
        assert not torch.allclose(other[1], first[1], atol=1e-3), name


@pytest.mark.parametrize("name", ["ddim", "ddpm"])
def test_an_image_depends_on_its_seed_not_its_batch(name: str) -> None:
    model = tiny_model()
    text = make_text(batch=3)
    empty = make_text(batch=3, length=2, real=1, seed=5)
    seeds = [11, 12, 13]
    batch = sample(model, make_sampler(name, COSINE_V), text, empty, initial_noise(seeds, (3, SIZE, SIZE)), 3,
                   generator=[torch.Generator().manual_seed(s) for s in seeds])
    alone = sample(model, make_sampler(name, COSINE_V), TextEncoding(text.token_states[2:], text.mask[2:], text.pooled[2:]),
                   TextEncoding(empty.token_states[2:], empty.mask[2:], empty.pooled[2:]),
                   initial_noise(seeds[2:], (3, SIZE, SIZE)), 3, generator=[torch.Generator().manual_seed(13)])
    assert torch.allclose(batch[2], alone[0], atol=1e-4)


def test_start_step_and_progress() -> None:
    model = tiny_model()
    calls: list[tuple[int, int]] = []
    sample(model, make_sampler("ddim", COSINE_V), make_text(), make_text(), torch.randn(2, 3, SIZE, SIZE), 4,
           guidance_scale=1.0, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]
    calls.clear()
    sample(model, make_sampler("ddim", COSINE_V), make_text(), make_text(), torch.randn(2, 3, SIZE, SIZE), 4,
           guidance_scale=1.0, start_step=3, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 1)]


def test_initial_noise_depends_only_on_the_seed() -> None:
    noise = initial_noise([5, 7, 9], (3, 4, 4))
    assert noise.shape == (3, 3, 4, 4)
    assert torch.equal(noise[1], initial_noise([7], (3, 4, 4))[0])
    assert torch.equal(noise[2], initial_noise([9, 5], (3, 4, 4))[0])
    assert torch.equal(noise[0], initial_noise([9, 5], (3, 4, 4))[1])
    assert torch.equal(noise[0], torch.randn((3, 4, 4), generator=torch.Generator().manual_seed(5)))
    assert not torch.equal(noise[0], noise[1])
    torch.manual_seed(123)
    assert torch.equal(initial_noise([7], (3, 4, 4))[0], noise[1])  # the global RNG does not matter


def test_concat_text_pads_to_the_longer_with_false_mask() -> None:
    short, long = make_text(batch=2, length=3, real=2, seed=1), make_text(batch=1, length=5, real=5, seed=2)
    both = concat_text(short, long)
    assert both.token_states.shape == (3, 5, TEXT_DIM) and both.mask.shape == (3, 5) and both.pooled.shape == (3, TEXT_DIM)
    assert both.mask.dtype == torch.bool
    assert both.mask.tolist() == [[True, True, False, False, False]] * 2 + [[True] * 5]
    assert torch.equal(both.token_states[:2, :3], short.token_states)
    assert torch.equal(both.token_states[:2, 3:], torch.zeros(2, 2, TEXT_DIM))
    assert torch.equal(both.token_states[2], long.token_states[0])
    assert torch.equal(both.pooled, torch.cat([short.pooled, long.pooled]))
    reverse = concat_text(long, short)
    assert reverse.mask.tolist() == [[True] * 5] + [[True, True, False, False, False]] * 2


def test_pad_tokens() -> None:
    text = make_text(length=3, real=3)
    assert pad_tokens(text, 3) is text and pad_tokens(text, 2) is text
    padded = pad_tokens(text, 6)
    assert padded.token_states.shape == (2, 6, TEXT_DIM)
    assert padded.lengths.tolist() == [3, 3] and not padded.mask[:, 3:].any()
    assert torch.equal(padded.pooled, text.pooled)


def smooth_images(size: int) -> torch.Tensor:
    coords = torch.linspace(0, 1, size)
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    return torch.stack([0.8 * torch.sin(math.pi * x), 0.6 * (x - y), 0.7 * torch.cos(math.pi * y)])[None].repeat(2, 1, 1, 1)


def test_low_res_condition_keeps_size_and_smooth_content() -> None:
    pixels = smooth_images(64)
    low = low_res_condition(pixels, 16)
    assert low.shape == pixels.shape
    assert (low - pixels).abs().mean() < 0.02 and (low - pixels).abs().max() < 0.1
    assert low.min() >= -1 and low.max() <= 1


def test_low_res_condition_drops_detail_and_adds_noise() -> None:
    checker = (torch.arange(32)[:, None] + torch.arange(32)[None]) % 2 * 1.6 - 0.8
    pixels = checker.expand(1, 3, 32, 32).clone()
    assert low_res_condition(pixels, 8).abs().max() < 0.05  # a 1-pixel checkerboard does not survive 32 -> 8 -> 32
    smooth = smooth_images(32)
    noise = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(low_res_condition(smooth, 8, noise, 0.0), low_res_condition(smooth, 8))
    noisy = low_res_condition(smooth, 8, noise, 0.2)
    assert noisy.shape == smooth.shape and noisy.min() >= -1 and noisy.max() <= 1
    assert (noisy - low_res_condition(smooth, 8)).abs().mean() > 0.05
