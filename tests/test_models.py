import json

import pytest
import torch
from diffusers.models.attention_processor import Attention
from model_helpers import TEXT_DIM, TINY, make_text, tiny_model

from fashiongen.config import ConfigError, ModelConfig
from fashiongen.models import (
    MODELS,
    FashionUNet,
    UNetSpec,
    build_model,
    check_model_config,
    count_parameters,
    get_spec,
)
from fashiongen.text import TextEncoding

TINY_SR = UNetSpec((8, 16), layers_per_block=1, head_channels=8, native_resolution=32, norm_num_groups=4, super_resolution=True)




def make_inputs(batch: int = 2, size: int = 32, seed: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, size, size, generator=generator), torch.tensor([10, 700])[:batch]


def run(model: FashionUNet, text: TextEncoding, **kwargs) -> torch.Tensor:
    sample, timesteps = make_inputs()
    with torch.no_grad():
        return model(sample, timesteps, text.token_states, text.mask, text.pooled, **kwargs)


def transformer_input_sizes(model: FashionUNet, resolution: int) -> list[int]:
    """Spatial sizes every attention (Transformer2DModel) block actually sees, from a forward pass on meta tensors."""
    sizes: list[int] = []
    hooks = [m.register_forward_hook(lambda module, args, out: sizes.append(args[0].shape[-1]))
             for m in model.modules() if type(m).__name__ == "Transformer2DModel"]
    low_res = torch.randn(1, 3, resolution, resolution, device="meta") if model.super_resolution else None
    with torch.device("meta"):
        out = model(torch.randn(1, 3, resolution, resolution), torch.tensor([5]), torch.randn(1, 4, TEXT_DIM),
                    torch.ones(1, 4, dtype=torch.bool), torch.randn(1, TEXT_DIM), low_res=low_res)
    for hook in hooks:
        hook.remove()
    assert out.shape == (1, 3, resolution, resolution)
    return sizes


def test_registry_configs_put_cross_attention_only_at_16px_or_less() -> None:
    for name, spec in MODELS.items():
        resolution = spec.native_resolution
        config = spec.unet_config(resolution, TEXT_DIM)
        levels = [resolution // 2**level for level in range(spec.num_levels)]
        assert list(config["down_block_types"]) == [
            "CrossAttnDownBlock2D" if size <= 16 else "DownBlock2D" for size in levels], name
        assert list(config["up_block_types"]) == [
            "CrossAttnUpBlock2D" if size <= 16 else "UpBlock2D" for size in reversed(levels)], name
        assert config["sample_size"] == resolution
        assert config["in_channels"] == (6 if spec.super_resolution else 3)


def test_unet_small_and_sr128_block_types() -> None:
    small = MODELS["unet-small"].unet_config(64, TEXT_DIM)
    assert small["down_block_types"] == ("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D")
    assert small["up_block_types"] == ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D")
    sr = MODELS["unet-sr128"].unet_config(128, TEXT_DIM)
    assert sr["down_block_types"] == ("DownBlock2D", "DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D")
    assert sr["up_block_types"] == ("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D")
    assert sr["in_channels"] == 6


def test_built_registry_models_attend_only_on_small_feature_maps() -> None:
    for name, spec in MODELS.items():
        with torch.device("meta"):
            model = FashionUNet(spec, spec.native_resolution, TEXT_DIM)
        sizes = transformer_input_sizes(model, spec.native_resolution)
        assert sizes and max(sizes) <= spec.max_attention_resolution, (name, sizes)
        head_dims = {a.inner_dim // a.heads for a in model.modules() if isinstance(a, Attention)}
        assert head_dims == {spec.head_channels}, name


def test_attention_heads_follow_head_channels() -> None:
    config = MODELS["unet-base"].unet_config(64, TEXT_DIM)
    assert config["attention_head_dim"] == (2, 4, 5, 7)  # (128, 256, 320, 448) channels / 64
    assert TINY.unet_config(32, TEXT_DIM)["attention_head_dim"] == (1, 2)


def test_unet_tiny_builds_and_runs_at_32px() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="unet-tiny"), resolution=32, text_dim=TEXT_DIM).eval()
    out = run(model, make_text())
    assert out.shape == (2, 3, 32, 32) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert 0.5e6 < count_parameters(model) < 2e6


def test_parameter_counts_of_compact_small_and_base() -> None:
    counts = {}
    for name in ("unet-compact", "unet-small", "unet-base"):
        with torch.device("meta"):
            counts[name] = count_parameters(build_model(ModelConfig(name=name), resolution=64, text_dim=384))
    assert 28e6 < counts["unet-small"] < 40e6
    assert 2 * counts["unet-compact"] < 40 * 2**20  # float16 weights well under the 60 MB shipped with the package
    assert 90e6 < counts["unet-base"] < 110e6  # the issue asks for ~100M


def test_a_model_runs_at_other_divisible_resolutions() -> None:
    torch.manual_seed(0)
    model = FashionUNet(TINY, 16, TEXT_DIM).eval()
    sample = torch.randn(2, 3, 16, 16)
    text = make_text()
    with torch.no_grad():
        out = model(sample, torch.tensor([1, 2]), text.token_states, text.mask, text.pooled)
    assert out.shape == (2, 3, 16, 16)


def test_unknown_model_names_the_key_and_lists_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"model.name: unknown model 'unet-huge'; known models: unet-tiny, unet-tiny-sr, unet-small"):
        check_model_config(ModelConfig(name="unet-huge"), 64)
    with pytest.raises(ConfigError, match="unet-sr256"):
        get_spec("unet-huge")


def test_resolution_not_divisible_names_data_resolution() -> None:
    with pytest.raises(ConfigError, match=r"data.resolution: resolution 60 is not divisible by 8"):
        check_model_config(ModelConfig(name="unet-small"), 60)
    with pytest.raises(ConfigError, match=r"data.resolution: .*not divisible by 16"):
        check_model_config(ModelConfig(name="unet-sr256"), 8)
    assert check_model_config(ModelConfig(name="unet-small"), 32) is MODELS["unet-small"]


def test_low_res_resolution_must_match_the_kind_of_model() -> None:
    with pytest.raises(ConfigError, match=r"model.low_res_resolution: super-resolution model unet-sr128 needs"):
        check_model_config(ModelConfig(name="unet-sr128"), 128)
    with pytest.raises(ConfigError, match=r"model.low_res_resolution"):
        check_model_config(ModelConfig(name="unet-sr128", low_res_resolution=128), 128)
    with pytest.raises(ConfigError, match=r"model.low_res_resolution: unet-small is not a super-resolution model"):
        check_model_config(ModelConfig(name="unet-small", low_res_resolution=32), 64)
    assert check_model_config(ModelConfig(name="unet-sr128", low_res_resolution=64), 128).super_resolution


def test_super_resolution_model_needs_and_uses_low_res() -> None:
    model = tiny_model(TINY_SR)
    assert model.unet.config.in_channels == 6
    text = make_text()
    with pytest.raises(ValueError, match="low-res image"):
        run(model, text)
    low = torch.rand(2, 3, 32, 32) * 2 - 1
    out = run(model, text, low_res=low)
    assert out.shape == (2, 3, 32, 32)
    assert torch.equal(out, run(model, text, low_res=low.clone()))
    assert not torch.allclose(out, run(model, text, low_res=-low), atol=1e-4)


def test_attribute_ids_condition_the_output() -> None:
    model = tiny_model(attribute_vocab={"colour": ["Red", "Blue"]})
    text = make_text()
    red = run(model, text, attribute_ids=torch.tensor([[1], [1]]))
    blue = run(model, text, attribute_ids=torch.tensor([[2], [2]]))
    none = run(model, text, attribute_ids=torch.tensor([[0], [0]]))
    assert not torch.allclose(red, blue, atol=1e-6)
    assert not torch.allclose(red, none, atol=1e-6)
    assert torch.equal(red, run(model, text, attribute_ids=torch.tensor([[1], [1]])))
    mixed = run(model, text, attribute_ids=torch.tensor([[1], [2]]))
    assert torch.allclose(mixed[0], red[0], atol=1e-5) and torch.allclose(mixed[1], blue[1], atol=1e-5)
    with pytest.raises(ValueError, match=r"conditioned on attributes \['colour'\]; pass attribute_ids"):
        run(model, text)


def test_model_without_attributes_ignores_attribute_ids() -> None:
    model = tiny_model()
    text = make_text()
    assert torch.equal(run(model, text), run(model, text, attribute_ids=torch.tensor([[1], [2]])))


def test_masked_tokens_do_not_matter_unmasked_ones_do() -> None:
    model = tiny_model()
    text = make_text(length=6, real=3)
    out = run(model, text)
    padded = TextEncoding(text.token_states.clone(), text.mask, text.pooled)
    padded.token_states[:, 4] = torch.randn(2, TEXT_DIM)
    assert torch.allclose(out, run(model, padded), atol=1e-6)
    changed = TextEncoding(text.token_states.clone(), text.mask, text.pooled)
    changed.token_states[:, 1] = torch.randn(2, TEXT_DIM)
    assert not torch.allclose(out, run(model, changed), atol=1e-5)


def test_extra_padding_does_not_change_the_output() -> None:
    model = tiny_model()
    short = make_text(length=3, real=3)
    long = TextEncoding(torch.cat([short.token_states, torch.zeros(2, 4, TEXT_DIM)], dim=1),
                        torch.cat([short.mask, torch.zeros(2, 4, dtype=torch.bool)], dim=1), short.pooled)
    assert torch.allclose(run(model, short), run(model, long), atol=1e-5)


def test_pooled_text_is_used_only_when_enabled() -> None:
    text = make_text()
    other = TextEncoding(text.token_states, text.mask, torch.randn(2, TEXT_DIM))
    pooled = tiny_model(pooled_text=True)
    assert not torch.allclose(run(pooled, text), run(pooled, other), atol=1e-6)
    plain = tiny_model(pooled_text=False)
    assert plain.condition.pooled is None
    assert torch.equal(run(plain, text), run(plain, other))


def test_timestep_changes_the_output() -> None:
    model = tiny_model()
    text = make_text()
    sample, _ = make_inputs()
    with torch.no_grad():
        early = model(sample, torch.tensor([1, 1]), text.token_states, text.mask, text.pooled)
        late = model(sample, torch.tensor([900, 900]), text.token_states, text.mask, text.pooled)
    assert not torch.allclose(early, late, atol=1e-5)


def test_description_rebuilds_an_identical_module() -> None:
    model = tiny_model(TINY_SR, attribute_vocab={"colour": ["Red", "Blue"], "gender": ["Men", "Women", "Unisex"]},
                       pooled_text=False)
    description = json.loads(json.dumps(model.description()))  # exports store it as JSON
    assert description["text_dim"] == TEXT_DIM and description["resolution"] == 32
    rebuilt = FashionUNet.from_description(description).eval()
    assert rebuilt.spec == model.spec
    assert rebuilt.attribute_vocab == model.attribute_vocab
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    text = make_text()
    ids = torch.tensor([[1, 3], [2, 0]])
    low = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.equal(run(model, text, attribute_ids=ids, low_res=low), run(rebuilt, text, attribute_ids=ids, low_res=low))


def test_description_of_a_fresh_model_differs_only_in_weights() -> None:
    model = tiny_model(seed=0)
    other = FashionUNet.from_description(model.description())
    assert set(other.state_dict()) == set(model.state_dict())
    assert other.condition.pooled is not None
