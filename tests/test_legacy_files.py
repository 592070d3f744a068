"""Files written by the pre-refactor FashionGen (commit add54b9) still load with the current code.

The fixtures in tests/fixtures/legacy/ were made by that commit's own code (make_fixtures.py there says how to
regenerate them): an export, a run directory with a checkpoint, a critic, a saved pipeline with a super-resolution
stage and the critic, a submission set, a sample.py job and an image of the shipped model. Each test copies what it
uses to tmp_path (the fixtures are read-only inputs) and goes through public entry points only, imported inside
each test so that one module that fails to import fails only the tests that need it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
LEGACY = Path(__file__).resolve().parent / "fixtures" / "legacy"
FACTS = json.loads((LEGACY / "fixtures.json").read_text(encoding="utf-8"))
FAST = dict(num_inference_steps=2, guidance_scale=2.0)


def copy(name: str, tmp_path: Path) -> Path:
    """A private copy of a fixture (file times kept, so a rewrite shows)."""
    return Path(shutil.copytree(LEGACY / name, tmp_path / name))


def load(path: Path):
    from fashiongen.pipeline import FashionGenPipeline

    pipe = FashionGenPipeline.from_pretrained(path)
    pipe.show_progress = False
    return pipe


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file's bytes and mtime: a file written again shows even with the same bytes."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


def run_python(args: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(autouse=True)
def _in_tmp_on_one_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """cwd in tmp_path: old configs name relative paths (data, runs, text-cache), nothing lands in the repo. One torch
    thread: on 2 shared cores, 2 threads ran the shipped model's 20 steps 10x slower (48 s vs 4.7 s); the pixels were
    the same on 1 and 2 threads."""
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_export_loads_and_generates_with_its_attributes(tmp_path: Path) -> None:
    pipe = load(copy("export", tmp_path))
    image = pipe("a red silk dress", seed=0, attributes=FACTS["export"]["attributes"], **FAST)[0]
    assert (image.size, image.mode) == ((32, 32), "RGB")


def write_ema_weights(checkpoint: Path) -> None:
    """The checkpoint's ema.safetensors, left out of the fixture (4.9 MB): unet-tiny weights for its config and state."""
    from safetensors.torch import save_file

    from fashiongen.config import load_config
    from fashiongen.models import build_model

    config = load_config([checkpoint / "config.yaml"])
    state = json.loads((checkpoint / "state.json").read_text(encoding="utf-8"))
    torch.manual_seed(0)
    model = build_model(config.model, config.data.resolution, state["text_dim"], state["attribute_vocab"])
    save_file(model.state_dict(), checkpoint / "ema.safetensors")


def test_run_directory_and_its_checkpoint_load_the_same_ema_weights(tmp_path: Path) -> None:
    run_dir = copy("run", tmp_path) / Path(FACTS["run"]["dir"]).name
    write_ema_weights(run_dir / FACTS["run"]["checkpoint"])
    images = []
    for path in (run_dir, run_dir / FACTS["run"]["checkpoint"]):
        images.append(load(path)("a red dress", seed=1, attributes={"colour": "Red"}, **FAST)[0])
    assert all(image.size == (32, 32) for image in images)
    assert np.array_equal(np.asarray(images[0]), np.asarray(images[1]))  # the run directory means its newest checkpoint


def test_critic_loads(tmp_path: Path) -> None:
    from fashiongen.evaluation.critic import load_critic

    _, info = load_critic(copy("critic", tmp_path))
    assert info["training"]["steps"] == FACTS["critic"]["steps"]
    assert sorted(info["attribute_vocab"]) == sorted(FACTS["critic"]["attributes"])


def test_saved_pipeline_with_super_resolution_and_critic_loads(tmp_path: Path) -> None:
    from fashiongen.evaluation.critic import load_critic

    folder = copy("pipeline", tmp_path)
    pipe = load(folder)
    assert pipe("a red silk dress", seed=0, **FAST)[0].size == (32, 32)  # base 16 px, then the SR stage
    assert pipe("a red silk dress", seed=0, size=16, **FAST)[0].size == (16, 16)  # the base stage alone
    _, info = load_critic(folder / "critic")
    assert info["training"]["steps"] == FACTS["critic"]["steps"]


@pytest.mark.slow
def test_submission_validates_and_a_rerun_finds_it_complete(tmp_path: Path) -> None:
    from fashiongen.pipeline import SamplingSettings
    from fashiongen.submission import generate_submission, read_caption_list, validate_submission

    folder = copy("submission", tmp_path)
    captions_file = Path(shutil.copy(LEGACY / FACTS["submission"]["captions"], tmp_path / "captions.jsonl"))
    captions = read_caption_list(captions_file)
    assert validate_submission(folder) == []
    assert validate_submission(folder, captions) == []
    result = run_python(["-m", "fashiongen.submission", "validate", str(folder), "--captions", str(captions_file)],
                        cwd=REPO, timeout=120)
    assert (result.returncode, result.stdout.strip()) == (0, "OK: 6 images for 3 captions at 32x32"), result.stderr[-2000:]

    before = snapshot(folder)
    settings = FACTS["submission"]
    summary = generate_submission(load(copy("export", tmp_path)), captions, folder, settings["per_caption"],
                                  SamplingSettings(**settings["settings"]), resolution=settings["resolution"],
                                  base_seed=settings["base_seed"], use_attributes=settings["use_attributes"],
                                  show_progress=False)
    assert (summary.written, summary.skipped, summary.total) == (0, 6, 6)  # same model, settings and seeds: nothing to do
    assert snapshot(folder) == before


@pytest.mark.slow
def test_a_sample_job_resumes_into_the_old_folder_without_regenerating(tmp_path: Path) -> None:
    model, folder = copy("export", tmp_path), copy("samples", tmp_path)
    rows = lines(folder / "manifest.jsonl")
    images = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in (folder / "images").iterdir()}
    assert len(rows) == len(images) == FACTS["samples"]["images"]
    result = run_python([str(REPO / "sample.py"), "--model", str(model), *FACTS["samples"]["args"], "--out", str(folder)],
                        cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert lines(folder / "manifest.jsonl") == rows
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in (folder / "images").iterdir()} == images


def test_the_shipped_model_draws_the_same_pixels_as_before() -> None:
    from fashiongen.pipeline import default_model_path

    recorded = json.loads((LEGACY / "shipped-image.json").read_text(encoding="utf-8"))
    image = load(default_model_path())(recorded["prompt"], seed=recorded["seed"], scheduler=recorded["scheduler"],
                                       num_inference_steps=recorded["num_inference_steps"],
                                       guidance_scale=recorded["guidance_scale"],
                                       num_images_per_prompt=recorded["num_images_per_prompt"],
                                       size=recorded["size"][0])[0]  # the base model's 64 px design, before any later stage
    pixels = np.asarray(image)
    if hashlib.sha256(pixels.tobytes()).hexdigest() != recorded["pixels_sha256"]:
        with Image.open(LEGACY / recorded["png"]) as saved:
            old = np.asarray(saved.convert("RGB"))
        assert old.shape == pixels.shape, f"the shipped model's image changed shape: {pixels.shape} (was {old.shape})"
        differences = np.abs(pixels.astype(np.int16) - old.astype(np.int16))
        difference = int(differences.max())
        # Another CPU's kernels (AVX-512 vs AVX2, Intel vs AMD) may round a few values the other way; a change of the
        # model, sampler or seeds moves thousands of values by far more.
        if difference <= 1 and (differences > 0).mean() < 0.005:
            return
        pytest.fail(f"the shipped model's image changed: shape {pixels.shape} (was {old.shape}), max abs pixel difference "
                    f"{difference} vs {recorded['png']} (made on {recorded['made_on']})")
