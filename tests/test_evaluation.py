"""evaluate.py end to end on tiny real pieces: garment photos as the reference set, a tiny critic
trained on them, a tiny exported generator; report files and keys, memorisation of copied training
images, sweeps, reference statistics, and the messages for bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import write_garment_set
from fashiongen.config import TextConfig, load_config
from fashiongen.data import open_source
from fashiongen.evaluation.images import EvaluationInputError, read_image_folder
from fashiongen.evaluation.report import headline_metrics
from fashiongen.text import CaptionEncoder
from fashiongen.train.critic import train_critic
from pipeline_helpers import export_tiny, export_tiny_gan
from script_helpers import load_script

VAL_FRACTION = 0.3


@pytest.fixture(scope="module")
def script():
    return load_script("evaluate")


@pytest.fixture(scope="module")
def garments(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 garment photos, each with its own noise so that no two are pixel copies (as real products are not)."""
    root = write_garment_set(tmp_path_factory.mktemp("eval-garments"), 40)
    rng = np.random.default_rng(0)
    for row in (json.loads(line) for line in (root / "captions.jsonl").read_text().splitlines()):
        path = root / row["file"]
        pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)
        noisy = np.clip(pixels + rng.integers(-40, 41, pixels.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(path, format="JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG", quality=95)
    return root


@pytest.fixture(scope="module")
def critic(garments: Path, tmp_path_factory: pytest.TempPathFactory, text_cache_dir: Path) -> Path:
    settings = {"data.source": garments, "data.val_fraction": VAL_FRACTION, "data.caption_mode": "raw",
                "text.cache_dir": text_cache_dir, "critic.resolution": 32, "critic.channels": "[8, 16, 16]",
                "critic.embed_dim": 32, "critic.text_hidden": 64, "critic.batch_size": 16, "critic.max_steps": 20,
                "critic.warmup_steps": 2, "critic.validate_every": 0, "critic.checkpoint_every": 20,
                "critic.num_distractors": 7, "critic.output_dir": tmp_path_factory.mktemp("critic") / "run"}
    return train_critic(load_config([], [f"{k}={v}" for k, v in settings.items()]), show_progress=False)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_tiny(tmp_path_factory.mktemp("eval-model") / "export", CaptionEncoder(TextConfig(cache_dir="")))


def common(garments: Path, critic: Path, tmp_path: Path) -> list[str]:
    return ["--reference", str(garments), "--val-fraction", str(VAL_FRACTION), "--critic", str(critic),
            "--cache-dir", str(tmp_path / "cache"), "--kid-subset-size", "4", "--quiet"]


def test_model_evaluation_writes_every_metric_for_generated_and_real(script, garments: Path, critic: Path, model: Path,
                                                                     tmp_path: Path) -> None:
    out = tmp_path / "eval"
    assert script.main(["--model", str(model), "--captions", str(garments), "--split", "all", "--num-images", "6",
                        "--steps", "2", "--out", str(out), *common(garments, critic, tmp_path)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["meta"]["settings"]["size"] == 32 and report["meta"]["settings"]["after_base"] == []  # the base's own size
    metrics = report["metrics"]
    assert np.isfinite(metrics["fid"]["value"]) and metrics["fid"]["num_generated"] == 6 and "biased" in metrics["fid"]["warning"]
    assert metrics["kid"]["subset_size"] == 4 and np.isfinite(metrics["kid"]["std"])
    floor = metrics["real_vs_real"]  # 6 real training photos against the same validation photos
    assert floor["num_train"] == 6 and floor["num_real"] == metrics["fid"]["num_real"] and floor["split"] == "train"
    assert 0 < metrics["fid"]["real_vs_real"] == floor["fid"] < metrics["fid"]["value"]  # a 2-step tiny model is far off
    assert metrics["kid"]["real_vs_real"]["mean"] < metrics["kid"]["mean"]
    for key in ("critic_score", "r_precision", "critic_is"):
        assert set(metrics[key]) == {"generated", "real", "count_generated", "count_real"}, key
        assert np.isfinite(metrics[key]["generated"]["mean"]) and np.isfinite(metrics[key]["real"]["mean"]), key
    assert metrics["r_precision"]["real"]["mean"] > metrics["r_precision"]["generated"]["mean"]  # noise vs real photos
    assert {"category", "colour"} <= set(metrics["attribute_accuracy"])
    assert set(report["memorisation"]) == {"critic_cosine", "pixel_l1"}
    assert report["meta"]["model"]["fingerprint"] and report["meta"]["settings"]["num_inference_steps"] == 2
    for file in report["figures"].values():
        assert (out / file).is_file(), file
    markdown = (out / "report.md").read_text()
    assert "| FID (TF-Inception pool3) |" in markdown and "real validation" in markdown and "Memorisation" in markdown
    assert "real-vs-real floor: 6 train photos" in markdown
    assert len(list((out / "generated" / "images").iterdir())) == 6


def test_copies_of_training_photos_are_flagged_as_memorised(script, garments: Path, critic: Path, tmp_path: Path) -> None:
    train = open_source(garments, split="train", val_fraction=VAL_FRACTION)
    copies = tmp_path / "copies"
    copies.mkdir()
    for index in range(6):
        Image.fromarray(train[index].image).save(copies / f"{index}.png")  # the set is 32 px already
    out = tmp_path / "report"
    assert script.main(["--images", str(copies), "--out", str(out), *common(garments, critic, tmp_path)]) == 0
    report = json.loads((out / "report.json").read_text())
    pixels = report["memorisation"]["pixel_l1"]
    assert pixels["generated"]["p50"] < 1.0 and pixels["fraction_closer_than_baseline_p1"] >= 0.5
    assert report["memorisation"]["critic_cosine"]["generated"]["p50"] > 0.99
    # no captions in a plain folder: no text scores for it (the real photos' ceiling is still reported)
    assert report["metrics"]["critic_score"]["generated"] is None and report["metrics"]["critic_score"]["real"]["mean"] > 0
    assert report["metrics"]["critic_is"]["generated"]["mean"] >= 1.0


@pytest.mark.slow  # among the slowest of the fast tier (shipped models or a training run): full run only
def test_sweep_draws_fid_and_critic_score_per_setting(script, garments: Path, critic: Path, model: Path, tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    assert script.main(["--model", str(model), "--captions", str(garments), "--split", "all", "--num-images", "4",
                        "--steps", "2", "--sweep", "guidance=1,3", "--out", str(out), *common(garments, critic, tmp_path)]) == 0
    rows = json.loads((out / "sweep.json").read_text())
    assert [row["setting"] for row in rows] == [{"guidance_scale": 1.0}, {"guidance_scale": 3.0}]
    assert all(np.isfinite(row["fid"]) and row["critic_score"] is not None for row in rows)
    assert (out / "sweep.png").is_file() and (out / "sweep" / "guidance_scale=3.0" / "report.json").is_file()
    recorded = json.loads((out / "sweep" / "guidance_scale=3.0" / "report.json").read_text())["meta"]["settings"]
    assert recorded["guidance_scale"] == 3.0 and recorded["num_inference_steps"] == 2 and "truncation" not in recorded


def test_a_gan_is_scored_and_swept_over_truncation(script, garments: Path, critic: Path, tmp_path: Path) -> None:
    gan = export_tiny_gan(tmp_path / "gan", CaptionEncoder(TextConfig(cache_dir="")))
    out = tmp_path / "gan-sweep"
    assert script.main(["--model", str(gan), "--captions", str(garments), "--split", "all", "--num-images", "4",
                        "--sweep", "truncation=0.5,1", "--out", str(out), *common(garments, critic, tmp_path)]) == 0
    rows = json.loads((out / "sweep.json").read_text())
    assert [row["setting"] for row in rows] == [{"truncation": 0.5}, {"truncation": 1.0}]
    assert all(np.isfinite(row["fid"]) for row in rows)
    header = json.loads((out / "sweep" / "truncation=0.5" / "generated" / "submission.json").read_text())
    assert header["settings"]["scheduler"] == "one-step" and header["settings"]["truncation"] == 0.5
    # the report records the settings a GAN reads (the default truncation filled in), none of diffusion's
    report = json.loads((out / "sweep" / "truncation=0.5" / "report.json").read_text())
    recorded = report["meta"]["settings"]
    assert recorded["truncation"] == 0.5 and "guidance_scale" not in recorded and "num_inference_steps" not in recorded
    assert headline_metrics(report)["evaluated on"].endswith("(one-step, truncation 0.5)")  # what the model card says
    assert script.main(["--model", str(gan), "--captions", str(garments), "--num-images", "4", "--steps", "5",
                        "--out", str(tmp_path / "refused"), *common(garments, critic, tmp_path)]) == 2  # a diffusion option


def test_stats_only_caches_reference_statistics(script, garments: Path, tmp_path: Path) -> None:
    args = ["--stats-only", "--reference", str(garments), "--val-fraction", str(VAL_FRACTION), "--resolution", "32",
            "--cache-dir", str(tmp_path / "cache"), "--quiet"]
    assert script.main(args) == 0
    (cached,) = (tmp_path / "cache" / "fid").glob("*.npz")
    stamp = cached.stat().st_mtime_ns
    assert script.main(args) == 0 and cached.stat().st_mtime_ns == stamp


def test_bad_folders_get_clear_messages(script, garments: Path, critic: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture) -> None:
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.new("RGB", (32, 32), "red").save(mixed / "a.png")
    Image.new("RGB", (48, 48), "blue").save(mixed / "b.png")
    with pytest.raises(EvaluationInputError, match=r"mixed sizes .*--resolution"):
        read_image_folder(mixed)
    assert read_image_folder(mixed, resolution=32).resolution == 32
    grey = tmp_path / "grey"
    grey.mkdir()
    Image.new("L", (32, 32), 128).save(grey / "g.png")
    assert read_image_folder(grey).images[0].shape == (32, 32, 3)
    submission = tmp_path / "submission"
    (submission / "images").mkdir(parents=True)
    Image.new("RGB", (32, 32)).save(submission / "images" / "1_0.png")
    (submission / "submission.jsonl").write_text(json.dumps({"file": "images/1_0.png", "caption_id": "1"}) + "\n")
    assert script.main(["--images", str(submission), "--out", str(tmp_path / "r"), *common(garments, critic, tmp_path)]) == 2
    assert "submission.jsonl:1: needs \"file\" and a non-empty \"caption\"" in capsys.readouterr().err
    assert script.main(["--images", str(grey), "--out", str(tmp_path / "r"), *common(garments, critic, tmp_path)]) == 2
    assert "FID/KID need at least 2" in capsys.readouterr().err
    other_critic = shutil.copytree(critic, tmp_path / "other-critic")
    info = json.loads((other_critic / "critic.json").read_text())
    info["text"]["identity"] = "minilm-000000000000-L64-float32-norm"
    (other_critic / "critic.json").write_text(json.dumps(info))
    copies = tmp_path / "two"
    copies.mkdir()
    for name in ("a", "b"):
        Image.new("RGB", (32, 32), "red").save(copies / f"{name}.png")
    args = ["--images", str(copies), "--out", str(tmp_path / "r"), *common(garments, other_critic, tmp_path)]
    assert script.main(args) == 2
    assert "critic trained with encoder minilm-000000000000" in capsys.readouterr().err


def test_a_student_is_scored_per_step_count(script, garments: Path, critic: Path, model: Path, tmp_path: Path) -> None:
    from fashiongen.diffusion.student import student_description
    from fashiongen.families import load_generator
    from fashiongen.models.files import replacing_directory, write_model_files
    from fashiongen.release import publish
    from fashiongen.train.distill import adapter_state, build_student

    teacher = load_generator(model)
    config = load_config([], ["distill.lora_rank=2", "distill.grid_size=10"])
    student = build_student(teacher, config)  # fresh: its teacher's conditional branch, a real student's files
    with replacing_directory(tmp_path / "student") as temporary:
        write_model_files(adapter_state(student), student_description(teacher, config, str(model.resolve()), {"steps": 0}),
                          temporary)
    folder = publish(model, tmp_path / "folder", dtype="float32", critic=None, student=tmp_path / "student")
    out = tmp_path / "student-sweep"
    assert script.main(["--model", str(folder), "--base", "student", "--captions", str(garments), "--split", "all",
                        "--num-images", "4", "--sweep", "steps=1,2", "--out", str(out), *common(garments, critic, tmp_path)]) == 0
    rows = json.loads((out / "sweep.json").read_text())
    assert [row["setting"] for row in rows] == [{"num_inference_steps": 1}, {"num_inference_steps": 2}]
    assert all(np.isfinite(row["fid"]) and row["critic_score"] is not None for row in rows)
    report = json.loads((out / "sweep" / "num_inference_steps=2" / "report.json").read_text())
    assert report["meta"]["settings"]["scheduler"] == "lcm" and Path(report["meta"]["model"]["stages"][0]).name == "student"
    # each sweep point's images are checked against their captions' attributes, as a single evaluation's are
    assert all(v["generated"] is not None for v in report["metrics"]["attribute_accuracy"].values())
    # and the sweep's own table carries R-precision and every attribute's accuracy beside FID, KID and the critic
    accuracy = {name: v["generated"]["accuracy"] for name, v in report["metrics"]["attribute_accuracy"].items()}
    assert rows[1]["attribute_accuracy"] == accuracy and accuracy
    assert rows[1]["r_precision"] == report["metrics"]["r_precision"]["generated"]["mean"]
    table = (out / "sweep.md").read_text()
    assert "R-precision" in table and all(f"{name} accuracy" in table for name in accuracy)
    assert len({line.count("|") for line in table.splitlines() if line.startswith("|")}) == 1  # header, rule, rows agree
