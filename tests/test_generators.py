"""The generator interface: every family implements it, a new family plugs in with one registry line, and the
settings currency (SamplingSettings, image_seeds) is checked once where it is made."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from fashiongen.app import GenerateRequest, Studio
from fashiongen.config import TextConfig
from fashiongen.families import FAMILIES, load_generator, sampler_names
from fashiongen.generators import TEXT, GenerationInputs, ImageFamily, StepCallback
from fashiongen.jobs import PromptItem, write_samples
from fashiongen.models.files import ModelFiles, ModelInfo, read_info, replacing_directory, write_model_files
from fashiongen.pipeline import FashionGenPipeline
from fashiongen.settings import (
    DEFAULT_SAMPLER,
    PipelineInputError,
    SamplingLimits,
    SamplingSettings,
    image_seeds,
)
from fashiongen.text import CaptionEncoder
from pipeline_helpers import export_tiny
from script_helpers import load_script


class ColourGenerator:
    """A one-forward toy family: the caption's pooled embedding picks a colour, the seed's draw adds texture."""

    family: ClassVar[str] = "gan"
    conditioning: ClassVar[frozenset[str]] = frozenset({TEXT})
    samplers: ClassVar[tuple[str, ...]] = ("one-step",)
    can_edit: ClassVar[bool] = False
    settings_used: ClassVar[frozenset[str]] = frozenset({"scheduler"})
    default_steps: ClassVar[int] = 1

    def __init__(self, model: nn.Linear, info: ModelInfo, source: str) -> None:
        self.model, self.info, self.source = model, info, source

    @classmethod
    def from_files(cls, files: ModelFiles, device: str | torch.device, dtype: torch.dtype) -> ColourGenerator:
        assert files.info is not None
        model = nn.Linear(files.info.network["text_dim"], 3)
        model.load_state_dict(files.state_dict)
        return cls(model.to(device, dtype).eval(), files.info, str(files.directory))

    @property
    def resolution(self) -> int:
        return int(self.info.network["resolution"])

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return (3, self.resolution, self.resolution)

    @property
    def attribute_vocab(self) -> dict[str, list[str]]:
        return {}

    @property
    def sha256(self) -> str:
        return self.info.sha256

    def steps_per_image(self, settings: SamplingSettings, strength: float = 1.0) -> int:
        return 1

    def settings_record(self, settings: SamplingSettings) -> dict[str, Any]:
        return {"scheduler": settings.scheduler, "size": settings.size}

    def card_line(self) -> str:
        return "toy: one forward per image"

    def write(self, directory: Path, dtype: str) -> ModelInfo:
        return write_model_files(self.model.state_dict(), self.info, directory, dtype)

    def draw_latents(self, generators: Sequence[torch.Generator], settings: SamplingSettings) -> Tensor:
        return torch.stack([torch.randn(self.latent_shape, generator=g) for g in generators])  # [N, 3, R, R]

    def generate(self, inputs: GenerationInputs, settings: SamplingSettings, generators: Sequence[torch.Generator],
                 stage: int = 0, low_res: Tensor | None = None, preview: StepCallback | None = None) -> Tensor:
        latent = self.draw_latents(generators, settings)
        if (given := inputs.latents(stage)) is not None:
            latent = given
        with torch.no_grad():
            colour = self.model(inputs.text.pooled.float())  # [N, 3]
        images = torch.tanh(colour[:, :, None, None] + 0.3 * latent)
        if preview is not None:
            preview(1, 1, images)
        return images


@pytest.fixture(scope="module")
def encoder() -> CaptionEncoder:
    return CaptionEncoder(TextConfig(cache_dir=""))


@pytest.fixture()
def toy_family(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, encoder: CaptionEncoder) -> Path:
    """The one line a new family adds (here for the test only), and a model of it written as files."""
    monkeypatch.setitem(FAMILIES, "gan", ColourGenerator)
    torch.manual_seed(0)
    network = nn.Linear(encoder.dim, 3)
    info = {"family": "gan", "model": {"text_dim": encoder.dim, "resolution": 16},
            "text": {"encoder": "minilm", "identity": encoder.identity, "max_length": encoder.max_length,
                     "normalize_pooled": True, "dim": encoder.dim},
            "training": {"steps": 0}}
    with replacing_directory(tmp_path / "toy") as temporary:
        write_model_files(network.state_dict(), info, temporary)
    return tmp_path / "toy"


def test_every_registered_family_implements_the_interface() -> None:
    members = ("family", "conditioning", "samplers", "can_edit", "settings_used", "default_steps", "from_files", "resolution", "latent_shape",
               "attribute_vocab", "draw_latents", "steps_per_image", "generate", "write", "settings_record", "card_line")
    for name, family in FAMILIES.items():
        assert family.family == name
        missing = [member for member in members if not hasattr(family, member)]
        assert not missing, f"{family.__name__} lacks {missing}"
    assert DEFAULT_SAMPLER in sampler_names()


def test_the_shipped_model_loads_as_a_diffusion_generator() -> None:
    generator = load_generator(Path(__file__).resolve().parents[1] / "fashiongen" / "pretrained")
    assert isinstance(generator, ImageFamily) and generator.family == "diffusion" and generator.can_edit
    assert generator.latent_shape == (3, 64, 64) and DEFAULT_SAMPLER in generator.samplers


def test_a_new_family_plugs_into_pipeline_jobs_sample_cli_and_app(toy_family: Path, tmp_path: Path) -> None:
    pipe = FashionGenPipeline.from_pretrained(toy_family)
    pipe.show_progress = False
    assert pipe.samplers == ("one-step",) and read_info(toy_family).family == "gan"
    images = pipe(["a red silk dress", "a navy wool coat"], num_images_per_prompt=2, seed=5)  # its own default sampler
    assert len(images) == 4 and all(image.size == (16, 16) for image in images)
    again = pipe(["a navy wool coat"], seed=[8])[0]  # prompt 1, image 1 had seed 5 + 3
    assert np.array_equal(np.asarray(images[3]), np.asarray(again))
    frames = pipe.interpolate("a red silk dress", "a navy wool coat", seed_a=5, seed_b=8, num_frames=4)
    assert np.array_equal(np.asarray(frames[0]), np.asarray(images[0]))
    assert np.array_equal(np.asarray(frames[-1]), np.asarray(again))
    with pytest.raises(PipelineInputError, match=r"this model \(gan\) cannot edit photos"):
        pipe.edit(np.zeros((16, 16, 3), np.uint8), "a red dress")
    with pytest.raises(PipelineInputError, match="scheduler 'dpm\\+\\+' is not one of one-step"):
        pipe(["a red dress"], scheduler="dpm++")
    rows = write_samples(pipe, [PromptItem("a red silk dress")], SamplingSettings(scheduler="one-step"), tmp_path / "jobs",
                         num_images=2, seed=1)
    assert [row["seed"] for row in rows] == [1, 2] and (tmp_path / "jobs" / "grid.png").is_file()
    sample = load_script("sample")
    assert sample.main(["a black leather jacket", "--model", str(toy_family), "--scheduler", "one-step", "--num-images", "2",
                        "--out", str(tmp_path / "cli"), "--quiet"]) == 0
    manifest = [json.loads(line) for line in (tmp_path / "cli" / "manifest.jsonl").read_text().splitlines()]
    assert [row["settings"]["scheduler"] for row in manifest] == ["one-step", "one-step"]
    studio = Studio(pipe)
    try:
        updates = list(studio.generate(GenerateRequest("a green summer dress", num_images=2, sampler="one-step")))
    finally:
        studio.close()
    assert updates[-1].done and len(updates[-1].images) == 2


def test_the_pipeline_reaches_models_only_through_the_interface(tmp_path: Path, encoder: CaptionEncoder) -> None:
    base = load_generator(export_tiny(tmp_path / "base", encoder, resolution=16))
    upscaler = load_generator(export_tiny(tmp_path / "sr", encoder, super_resolution=True, seed=1))
    assert (base.family, upscaler.family) == ("diffusion", "superres")
    with pytest.raises(ValueError, match="only super-resolution stages may follow"):
        FashionGenPipeline([base, base], encoder)
    with pytest.raises(ValueError, match="needs a base"):
        FashionGenPipeline([upscaler], encoder)
    pipe = FashionGenPipeline([base, upscaler], encoder)
    pipe.show_progress = False
    assert pipe(["a red dress"], seed=0, num_inference_steps=2)[0].size == (32, 32)
    assert pipe(["a red dress"], seed=0, num_inference_steps=2, size=16)[0].size == (16, 16)  # the base stage only


def test_sampling_settings_cannot_be_made_out_of_range_and_name_the_callers_fields() -> None:
    assert SamplingSettings() == SamplingSettings(20, 3.0, DEFAULT_SAMPLER, "", None)
    for bad in ({"num_inference_steps": 0}, {"num_inference_steps": 1001}, {"guidance_scale": float("nan")},
                {"guidance_scale": -1.0}, {"size": 4}, {"scheduler": ""}, {"num_inference_steps": 2.5}):
        with pytest.raises(PipelineInputError):
            SamplingSettings(**bad)
    with pytest.raises(PipelineInputError, match="^Steps must be between 1 and 100, got 101"):
        SamplingSettings.parse(names={"num_inference_steps": "Steps"}, limits=SamplingLimits(max_steps=100),
                               num_inference_steps=101)
    with pytest.raises(PipelineInputError, match="^--scheduler 'plms' is not one of ddim"):
        SamplingSettings.parse(names={"scheduler": "--scheduler"}, samplers=("ddim", "dpm++"), scheduler="plms")
    assert SamplingSettings.parse(num_inference_steps=20.0).num_inference_steps == 20  # a JSON or Gradio number
    recorded = SamplingSettings(8, 2.0, "ddim", "blurry", 64).to_dict()
    assert SamplingSettings.from_dict(recorded) == SamplingSettings(8, 2.0, "ddim", "blurry", 64)
    with pytest.raises(PipelineInputError, match="^manifest line 3: guidance_scale"):
        SamplingSettings.from_dict({**recorded, "guidance_scale": 500}, "manifest line 3")


def test_the_seed_rule_is_one_function() -> None:
    assert image_seeds(7, 3) == [7, 8, 9]
    assert image_seeds(2**64 - 2, 2) == [2**64 - 2, 2**64 - 1]
    with pytest.raises(PipelineInputError, match="must be between 0 and"):
        image_seeds(2**64 - 2, 3)
    with pytest.raises(PipelineInputError, match="--seed must be an integer"):
        image_seeds("7", 1, "--seed")
