"""sample.py end to end on a tiny exported model: prompt sheets with manifests (and resuming them),
prompt files, interpolation strips and animations, edits, and exit codes with messages for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fashiongen.config import TextConfig
from fashiongen.jobs import read_manifest, read_prompts
from fashiongen.pipeline import PipelineInputError
from fashiongen.text import CaptionEncoder
from pipeline_helpers import export_tiny
from script_helpers import REPO, load_script

FAST = ["--steps", "2", "--guidance", "2", "--quiet"]


@pytest.fixture(scope="module")
def script():
    return load_script("sample")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_tiny(tmp_path_factory.mktemp("model") / "export", CaptionEncoder(TextConfig(cache_dir="")), attributes=True)


def test_prompts_write_images_grid_and_manifest_and_a_rerun_skips_them(script, model: Path, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "samples"
    args = ["--model", str(model), "a red silk dress", "black leather boots", "--num-images", "2", "--seed", "5",
            "--attribute", "category=Dresses", "--out", str(out), *FAST]
    assert script.main(args) == 0
    rows = read_manifest(out / "manifest.jsonl")
    assert [(r["prompt"], r["seed"]) for r in rows] == [("a red silk dress", 5), ("a red silk dress", 6),
                                                        ("black leather boots", 7), ("black leather boots", 8)]
    assert rows[0]["settings"] == {"num_inference_steps": 2, "guidance_scale": 2.0, "scheduler": "dpm++",
                                   "negative_prompt": "", "size": None}
    assert rows[0]["attributes"] == {"category": "Dresses"} and rows[0]["model"]
    assert all(Image.open(out / r["file"]).size == (32, 32) for r in rows)
    assert (out / "grid.png").is_file()
    before = {r["file"]: (out / r["file"]).stat().st_mtime_ns for r in rows}
    (out / rows[1]["file"]).unlink()  # as if killed before this image was written
    assert script.main(args) == 0
    assert len(read_manifest(out / "manifest.jsonl")) == 4  # only the missing image was made again, listed once
    assert all((out / f).stat().st_mtime_ns == t for f, t in before.items() if f != rows[1]["file"])
    capsys.readouterr()
    assert script.main([*args[:-len(FAST)], "--steps", "3", "--quiet"]) == 2  # same folder, other settings
    assert "another prompt, seed, setting or model" in capsys.readouterr().err


def test_prompt_files_text_and_jsonl(tmp_path: Path) -> None:
    text = tmp_path / "prompts.txt"
    text.write_text("# spring looks\na red silk dress\n\n  white sneakers  \n")
    assert [i.prompt for i in read_prompts(text)] == ["a red silk dress", "white sneakers"]
    jsonl = tmp_path / "prompts.jsonl"
    jsonl.write_text('{"prompt": "a dress", "seed": 3, "attributes": {"colour": "Red"}}\n{"caption": "boots"}\n')
    items = read_prompts(jsonl)
    assert (items[0].seed, items[0].attributes, items[1].prompt) == (3, {"colour": "Red"}, "boots")
    jsonl.write_text('{"prompt": "a dress"}\n{"seed": 1}\n')
    with pytest.raises(PipelineInputError, match=r"prompts.jsonl:2: needs a non-empty \"prompt\""):
        read_prompts(jsonl)
    jsonl.write_text('{"prompt": "a dress"\n')
    with pytest.raises(PipelineInputError, match=r"prompts.jsonl:1: not valid JSON"):
        read_prompts(jsonl)


def test_interpolation_writes_frames_strip_and_animations(script, model: Path, tmp_path: Path) -> None:
    out = tmp_path / "lerp"
    assert script.main(["--model", str(model), "--interpolate", "a red silk dress", "navy blue shirt", "--frames", "4",
                        "--scheduler", "ddim", "--out", str(out), *FAST]) == 0
    assert sorted(p.name for p in (out / "frames").iterdir()) == [f"frame_{i:02d}.png" for i in range(4)]
    assert Image.open(out / "strip.png").width >= 4 * 32
    for name in ("interpolation.gif", "interpolation.webp"):
        with Image.open(out / name) as animation:
            assert animation.n_frames == 6  # forward, then back without repeating the ends
    rows = read_manifest(out / "manifest.jsonl")
    assert [r["t"] for r in rows] == pytest.approx([0, 1 / 3, 2 / 3, 1]) and rows[0]["seed_b"] == 1


def test_edit_and_inpaint_from_files(script, model: Path, tmp_path: Path) -> None:
    photo = tmp_path / "shirt.png"
    Image.fromarray(np.tile(np.linspace(0, 255, 32, dtype=np.uint8)[None, :, None], (32, 1, 3))).save(photo)
    mask = tmp_path / "sleeves.png"
    Image.fromarray(np.where(np.arange(32)[None, :] < 10, 255, 0).astype(np.uint8).repeat(32, 0)).save(mask)
    out = tmp_path / "edit"
    assert script.main(["--model", str(model), "--edit", str(photo), "--mask", str(mask), "--strength", "1",
                        "the same shirt in red silk", "--num-images", "2", "--out", str(out), *FAST]) == 0
    edited = np.asarray(Image.open(out / "edits" / "edit_0.png"), dtype=np.int16)
    original = np.asarray(Image.open(photo), dtype=np.int16)
    assert np.abs(edited[:, 10:] - original[:, 10:]).max() == 0 and np.abs(edited[:, :10] - original[:, :10]).mean() > 1
    assert (out / "grid.png").is_file()
    assert read_manifest(out / "manifest.jsonl")[1]["seed"] == 1


def test_bad_input_exits_2_with_a_message(script, model: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    cases = [(["--model", str(tmp_path), "a dress"], "is not a FashionGen model"),
             (["--model", str(model), "--edit", str(tmp_path / "notes.txt"), "a dress"], "not an image"),
             (["--model", str(model), "a dress", "--guidance", "-2"], "--guidance must be between 0 and 50"),
             (["--model", str(model), "a dress", "--edit", str(tmp_path / "notes.txt"), "--strength", "2"], "strength"),
             (["--model", str(model)], "no prompts"),
             (["--model", str(model), "a dress", "--attribute", "category"], "NAME=VALUE"),
             (["--model", str(model), "a dress", "--attribute", "category=Hats"], "category='Hats'")]
    for args, message in cases:
        assert script.main([*args, "--out", str(tmp_path / "out"), "--quiet"]) == 2, args
        assert message in capsys.readouterr().err, args


@pytest.mark.slow
def test_sample_py_runs_as_a_script(model: Path, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(REPO / "sample.py"), "--model", str(model), "a red silk dress",
                           "--out", str(tmp_path / "s"), *FAST], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "1 images, grid.png and manifest.jsonl" in done.stdout
    assert json.loads((tmp_path / "s" / "manifest.jsonl").read_text().splitlines()[0])["seed"] == 0
