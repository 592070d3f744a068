"""The few-step student family: consistency math, distillation (train, resume, export), its files beside its teacher,
sampling (determinism, batch independence, step counts) and the plumbing (pipeline folders, sample.py, submissions,
evaluate.py), with tiny models on real files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from fashiongen.config import ConfigError, TextConfig
from fashiongen.diffusion import add_noise, alphas_cumprod_of
from fashiongen.diffusion.consistency import (
    boundary_scalings,
    clean_and_noise,
    consistency_output,
    ddim_step,
    sampling_timesteps,
    skip_grid,
)
from fashiongen.models.files import DESCRIPTION_DIGEST, ModelFileError, description_digest, read_info, sha256_of
from fashiongen.models.lora import add_lora, lora_state, merge_lora
from fashiongen.pipeline import FashionGenPipeline
from fashiongen.settings import PipelineInputError
from fashiongen.text import CaptionEncoder
from model_helpers import make_text, tiny_model
from pipeline_helpers import export_tiny
from script_helpers import load_script
from student_helpers import student_overrides

DIFFUSION = {"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2", "prediction_type": "v_prediction",
             "rescale_betas_zero_snr": False}


# ------------------------------------------------------------------------------------------- the math


@pytest.fixture(scope="module")
def encoder() -> CaptionEncoder:
    return CaptionEncoder(TextConfig(cache_dir=""))


def test_schedule_boundary_and_solver_steps() -> None:
    assert sampling_timesteps(1, 1000, 50) == [999]
    assert sampling_timesteps(2, 1000, 50) == [999, 499]
    assert sampling_timesteps(4, 1000, 50) == [999, 759, 519, 279]
    assert sampling_timesteps(8, 1000, 50) == [999, 879, 759, 639, 519, 399, 279, 159]
    assert skip_grid(1000, 50)[:3].tolist() == [19, 39, 59]
    with pytest.raises(ValueError, match="1 to 50 steps"):
        sampling_timesteps(51, 1000, 50)
    c_skip, c_out = boundary_scalings(torch.tensor([0, 19, 999]))
    assert c_skip[0] == 1 and c_out[0] == 0  # f(x, 0) = x: the consistency boundary condition
    assert c_skip[1:].max() < 1e-4 and (c_out[1:] > 0.9999).all()
    # the network's output read back as (clean, noise) inverts the forward process, for v and for epsilon
    alphas = alphas_cumprod_of(DIFFUSION)
    generator = torch.Generator().manual_seed(0)
    clean, noise = torch.rand(3, 3, 8, 8, generator=generator) * 2 - 1, torch.randn(3, 3, 8, 8, generator=generator)
    t = torch.tensor([10, 500, 990])
    x_t = add_noise(alphas, clean, noise, t)
    a = alphas[t].view(-1, 1, 1, 1)
    v = a.sqrt() * noise - (1 - a).sqrt() * clean
    for kind, output in (("v_prediction", v), ("epsilon", noise)):
        got_clean, got_noise = clean_and_noise(kind, alphas, x_t, output, t)
        assert torch.allclose(got_clean[:2], clean[:2], atol=1e-3) and torch.allclose(got_noise, noise, atol=1e-3)
        assert torch.allclose(ddim_step(alphas, got_clean, got_noise, t), x_t, atol=1e-4)
    assert torch.equal(consistency_output("v_prediction", alphas, x_t, v, torch.zeros(3, dtype=torch.long)), x_t)


def test_lora_starts_exact_trains_only_adapters_and_merges_into_plain_weights() -> None:
    model = tiny_model(attribute_vocab={"category": ["a", "b"]})
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    x, t, text = torch.randn(2, 3, 32, 32), torch.tensor([10, 900]), make_text(2)
    ids = torch.tensor([[1], [0]])
    before = model(x, t, text.token_states, text.mask, text.pooled, ids)
    names = add_lora(model, rank=2)
    assert names and all(not p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)
    assert torch.equal(model(x, t, text.token_states, text.mask, text.pooled, ids), before)  # B = 0
    for value in lora_state(model).values():
        torch.nn.init.normal_(value, std=0.05)
    adapted = model(x, t, text.token_states, text.mask, text.pooled, ids)
    assert (adapted - before).abs().max() > 1e-3
    assert merge_lora(model) == len(names)
    assert not lora_state(model) and set(model.state_dict()) == set(reference)
    assert torch.allclose(model(x, t, text.token_states, text.mask, text.pooled, ids), adapted, atol=1e-5)


def test_a_fresh_student_is_its_teachers_conditional_branch_at_every_guidance(encoder: CaptionEncoder, tmp_path: Path) -> None:
    from fashiongen.config import load_config
    from fashiongen.families import load_generator
    from fashiongen.train.distill import build_student

    teacher = load_generator(export_tiny(tmp_path / "teacher", encoder, attributes=True))
    student = build_student(teacher, load_config([], ["distill.lora_rank=2"]))
    text = encoder.encode(["red dress", "navy shirt"])
    x, t, ids = torch.randn(2, 3, 32, 32), torch.tensor([999, 300]), torch.tensor([[1, 0], [0, 2]])
    expected = teacher.model(x, t, text.token_states, text.mask, text.pooled, ids)
    for w in (1.0, 3.0, 7.5):
        got = student(x, t, text.token_states, text.mask, text.pooled, ids, None, torch.full((2,), w))
        assert torch.allclose(got, expected, atol=1e-6)
    assert sum(p.numel() for p in student.parameters() if p.requires_grad) < 0.5 * sum(p.numel() for p in teacher.model.parameters())


# ------------------------------------------------------------------------------------------- distillation


def test_distillation_logs_validates_exports_a_small_student_naming_its_teacher(distilled: dict[str, Path]) -> None:
    from fashiongen.runs import MetricsLog

    run = distilled["run"]
    records = MetricsLog(run / "metrics.jsonl").read()
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4]
    assert all(np.isfinite(r["loss"]) and r["loss"] >= 0 for r in records if "loss" in r)
    validation = [r for r in records if "val_diff_1" in r]
    assert [r["step"] for r in validation] == [4] and 0 <= validation[0]["val_diff_2"] <= 255
    assert (run / "samples" / "step_000004.png").is_file() and (run / "curves.png").is_file()
    info = read_info(distilled["export"])
    teacher_info = read_info(distilled["teacher"])
    student = info.section("student")
    assert info.family == "student" and student["teacher"]["sha256"] == teacher_info.sha256
    assert (distilled["export"] / student["teacher"]["path"]).resolve() == distilled["teacher"].resolve()
    assert info.training["steps"] == 4 and info.training["initialised_from"]["sha256"] == teacher_info.sha256
    assert sha256_of(distilled["export"] / "model.safetensors") == info.sha256
    from safetensors.torch import load_file

    keys = load_file(distilled["export"] / "model.safetensors").keys()
    assert keys and all(k.endswith(("lora_a", "lora_b")) or k.startswith("guidance.") for k in keys)
    assert (distilled["export"] / "model.safetensors").stat().st_size < (distilled["teacher"] / "model.safetensors").stat().st_size


def test_distillation_resumes_bitwise(distilled: dict[str, Path], tmp_path: Path, garments16: Path, text_cache_dir: Path) -> None:
    from fashiongen.runs import checkpoint_dirs
    from fashiongen.train import prepare, resolve_training_config, train
    from training_helpers import same_weights, tiny_config, weights

    config = tiny_config(garments16, tmp_path, text_cache_dir, **student_overrides(distilled["teacher"], **{"train.validate_every": 0}))
    run = prepare(config, show_progress=False)
    train(run, show_progress=False)
    for later in checkpoint_dirs(run.run_dir)[1:]:
        shutil.rmtree(later)  # as if killed right after step 2 was saved
    resumed_config, checkpoint = resolve_training_config([], [f"train.output_dir={tmp_path}", f"name={config.name}"], "latest")
    assert checkpoint is not None and checkpoint.name == "step_000002"
    resumed = train(prepare(resumed_config, resume=checkpoint, show_progress=False), show_progress=False)
    assert same_weights(weights(distilled["run"] / "checkpoints" / "step_000004" / "ema.safetensors"),
                        weights(resumed / "checkpoints" / "step_000004" / "ema.safetensors"))


def test_a_teacher_that_cannot_teach_is_refused_naming_the_key(tmp_path: Path, garments16: Path, text_cache_dir: Path,
                                                               encoder: CaptionEncoder) -> None:
    from fashiongen.train import prepare
    from pipeline_helpers import export_tiny_gan
    from training_helpers import tiny_config

    gan = export_tiny_gan(tmp_path / "gan", encoder)
    for overrides, message in (({"train.init_from": ""}, "train.init_from: a student needs its teacher"),
                               ({"train.init_from": gan}, "a gan model cannot teach"),
                               ({"train.init_from": tmp_path / "missing"}, "train.init_from"),
                               ({"data.resolution": 64}, "data.resolution: the teacher makes 32 px"),
                               ({"distill.grid_size": 7}, "distill.grid_size: 7 does not divide")):
        config = tiny_config(garments16, tmp_path / "runs", text_cache_dir,
                             **{**student_overrides(export_tiny(tmp_path / "t", encoder) if not (tmp_path / "t").exists()
                                                    else tmp_path / "t"), **overrides})
        with pytest.raises(ConfigError, match=message):
            prepare(config, show_progress=False)
    with pytest.raises(ConfigError, match="distill.guidance_max"):
        tiny_config(garments16, tmp_path, text_cache_dir, **{"distill.guidance_min": 4.0, "distill.guidance_max": 2.0})


# ------------------------------------------------------------------------------------------- sampling


def test_student_images_are_deterministic_batch_independent_at_every_step_count(distilled: dict[str, Path]) -> None:
    pipe = FashionGenPipeline.from_pretrained(distilled["folder"] / "student")
    pipe.show_progress = False
    assert pipe.stages[0].family == "student" and pipe.samplers == ("lcm",)
    settings = pipe.sampling_settings()
    assert settings.num_inference_steps == 4 and settings.scheduler == "lcm"
    prompts = ["red dress", "navy shirt", "white sneakers"]

    def images(chosen_prompts: list[str], seeds: list[int], **settings: object) -> np.ndarray:
        made = pipe.generate_images(chosen_prompts, seeds, pipe.sampling_settings(**settings))
        return np.stack([np.asarray(image, dtype=np.int16) for image in made])

    for steps in (1, 2, 4, 8):
        batch = images(prompts, [5, 6, 7], num_inference_steps=steps)
        assert batch.shape == (3, 32, 32, 3)
        assert np.array_equal(batch, images(prompts, [5, 6, 7], num_inference_steps=steps))
        assert np.abs(batch[1:2] - images(prompts[1:2], [6], num_inference_steps=steps)).max() <= 1, steps
    one, four = images(prompts, [5, 6, 7], num_inference_steps=1), images(prompts, [5, 6, 7], num_inference_steps=4)
    assert np.abs(one - four).mean() > 0.5  # more steps: another image
    assert not np.array_equal(images(prompts, [5, 6, 7], guidance_scale=1.0), images(prompts, [5, 6, 7], guidance_scale=5.0))
    with pytest.raises(PipelineInputError, match="1 to 10 steps"):
        pipe.generate_images(prompts[:1], [0], pipe.sampling_settings(num_inference_steps=11))
    with pytest.raises(PipelineInputError, match="scheduler 'dpm\\+\\+'"):
        pipe.sampling_settings(scheduler="dpm++")
    with pytest.raises(PipelineInputError, match="does not use"):
        pipe.settings_for_model(pipe.sampling_settings(), {"negative_prompt"})


def test_student_edits_a_photo_and_keeps_the_unmasked_part(distilled: dict[str, Path]) -> None:
    pipe = FashionGenPipeline.from_pretrained(distilled["folder"], base="student")
    pipe.show_progress = False
    photo = (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)
    kept = pipe.edit(photo, "red dress", strength=0.0, seed=0, num_inference_steps=4)
    assert np.abs(np.asarray(kept[0], dtype=np.int16) - photo).max() <= 1
    mask = np.zeros((32, 32), dtype=np.uint8)
    mask[:, 16:] = 255
    edited = np.asarray(pipe.edit(photo, "red dress", strength=1.0, mask=mask, seed=0)[0], dtype=np.int16)
    assert np.abs(edited[:, :14] - photo[:, :14]).max() <= 1 and np.abs(edited[:, 18:] - photo[:, 18:]).mean() > 5


# ------------------------------------------------------------------------------------------- files


def test_a_student_whose_teacher_is_missing_changed_or_whose_files_are_hostile_is_refused(distilled: dict[str, Path],
                                                                                         tmp_path: Path) -> None:
    from fashiongen.families import load_generator

    folder = tmp_path / "folder"
    shutil.copytree(distilled["folder"], folder)
    load_generator(folder / "student")  # intact
    teacher_weights = folder / "model.safetensors"
    original = teacher_weights.read_bytes()
    moved = tmp_path / "moved"
    shutil.copytree(folder / "student", moved)
    with pytest.raises(ModelFileError, match="its teacher \\(\\.\\.\\)"):
        load_generator(moved)  # the folder above is not a model
    other = export_tiny(tmp_path / "other", CaptionEncoder(TextConfig(cache_dir="")), seed=3, attributes=True)
    shutil.copytree(other, tmp_path / "retaught")
    shutil.copytree(folder / "student", tmp_path / "retaught" / "student")
    with pytest.raises(ModelFileError, match="not the model it was distilled from"):
        load_generator(tmp_path / "retaught" / "student")
    teacher_weights.write_bytes(original[:-64] + bytes(64))
    with pytest.raises(ModelFileError, match="checksum"):
        load_generator(folder / "student")
    teacher_weights.write_bytes(original)
    raw = json.loads((folder / "student" / "model.json").read_text())
    for change, message in ((lambda r: r["student"].pop("teacher"), "student.teacher"),
                            (lambda r: r["student"].update(lora_rank=10**9), "student.lora_rank"),
                            (lambda r: r["student"]["teacher"].update(path="../../../../../etc"), "its teacher")):
        edited = json.loads(json.dumps(raw))
        change(edited)
        edited[DESCRIPTION_DIGEST] = description_digest(edited)  # edited consistently: the fields are checked
        (folder / "student" / "model.json").write_text(json.dumps(edited))
        with pytest.raises(ModelFileError, match=message):
            load_generator(folder / "student", verify=False)
    (folder / "student" / "model.json").write_text(json.dumps(raw))
    manifest = json.loads((folder / "pipeline.json").read_text())
    for bases in ({"student": "../outside"}, {"student": "/etc"}, ["student"]):
        (folder / "pipeline.json").write_text(json.dumps({**manifest, "bases": bases}))
        with pytest.raises(ModelFileError, match="bases"):
            FashionGenPipeline.from_pretrained(folder)


# ------------------------------------------------------------------------------------------- plumbing


def test_sample_cli_and_submission_with_the_student(distilled: dict[str, Path], tmp_path: Path) -> None:
    sample = load_script("sample")
    out = tmp_path / "samples"
    assert sample.main(["--model", str(distilled["folder"] / "student"), "red dress", "--num-images", "2", "--out", str(out)]) == 0
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(manifest) == 2 and all(m["settings"]["scheduler"] == "lcm" and m["settings"]["num_inference_steps"] == 4
                                      for m in manifest)
    captions = tmp_path / "captions.jsonl"
    captions.write_text("".join(json.dumps({"id": f"c{i}", "caption": c}) + "\n" for i, c in enumerate(["red dress", "navy shirt"])))
    submission = tmp_path / "submission"
    assert sample.main(["--model", str(distilled["folder"]), "--base", "student", "--submission", str(captions),
                        "--per-caption", "2", "--out", str(submission)]) == 0
    from fashiongen.submission import main as submission_main

    assert submission_main(["validate", str(submission)]) == 0
    for model, base in ((distilled["folder"], "nope"), (distilled["teacher"], "student")):  # one line, exit 2, nothing written
        assert sample.main(["--model", str(model), "--base", base, "red dress", "--out", str(tmp_path / "refused")]) == 2
        assert not (tmp_path / "refused").exists()
    assert sample.main(["--model", str(distilled["folder"] / "student"), "red dress", "--negative", "blurry",
                        "--out", str(tmp_path / "refused")]) == 2  # no unconditional branch: no negative prompt


def test_a_checkpoint_exports_the_same_student_as_the_finished_run(distilled: dict[str, Path], tmp_path: Path) -> None:
    from fashiongen.train import export_checkpoint

    out = export_checkpoint(distilled["run"] / "checkpoints" / "step_000004", tmp_path / "exported")
    info = read_info(out)
    assert info.family == "student" and info.training["steps"] == 4
    assert (out / info.section("student")["teacher"]["path"]).resolve() == distilled["teacher"].resolve()
    pipes = [FashionGenPipeline.from_pretrained(path) for path in (out, distilled["export"])]
    made = [pipe.generate_images(["red dress"], [3], pipe.sampling_settings()) for pipe in pipes]
    assert np.array_equal(np.asarray(made[0][0]), np.asarray(made[1][0]))


@pytest.mark.parametrize("runtime", ["channels_last", "onnxruntime"])
def test_the_student_on_a_fast_runtime_makes_the_eager_images(distilled: dict[str, Path], tmp_path: Path, runtime: str) -> None:
    pytest.importorskip("onnxruntime") if runtime == "onnxruntime" else None
    eager = FashionGenPipeline.from_pretrained(distilled["folder"], base="student")
    fast = FashionGenPipeline.from_pretrained(distilled["folder"], base="student", runtime=runtime, runtime_cache_dir=tmp_path)
    assert fast.describe()["runtime"] == f"{runtime} float32"
    prompts, seeds = ["red dress", "navy shirt", "white sneakers"], [0, 1, 2]
    for steps in (1, 4):
        a, b = (np.stack([np.asarray(i, dtype=np.int16) for i in pipe.generate_images(
            prompts, seeds, pipe.sampling_settings(num_inference_steps=steps))]) for pipe in (eager, fast))
        assert np.abs(a - b).max() <= 2 and np.abs(a - b).mean() <= 0.02, steps
    if runtime == "onnxruntime":  # cached under a key of the student's and its teacher's weights
        (graph,) = tmp_path.glob("*.onnx")
        assert fast.stages[0].sha256[:16] in graph.name and fast.stages[0].sha256 != read_info(distilled["folder"] / "student").sha256


def test_the_app_serves_the_student_first_with_its_own_steps_and_the_teacher_one_choice_away(distilled: dict[str, Path],
                                                                                           tmp_path: Path) -> None:
    import os

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from gradio_client import Client

    from app_helpers import generate_args
    from fashiongen.app import build_demo
    from fashiongen.app.service import Studio, model_names

    pipes = [FashionGenPipeline.from_pretrained(distilled["folder"] / "student"), FashionGenPipeline.from_pretrained(distilled["folder"])]
    names = model_names(pipes)
    assert names == ["student", "diffusion"]
    studio = Studio(dict(zip(names, pipes)), output_dir=str(tmp_path / "studio"))
    assert studio.controls()["default_steps"] == 4 and studio.controls("diffusion")["default_steps"] == 20
    demo = build_demo(dict(zip(names, pipes)), None, output_dir=str(tmp_path / "outputs"))
    _, url, _ = demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, ssr_mode=False, quiet=True)
    try:
        client = Client(url, verbose=False)
        gallery, status, files, _ = client.predict(*generate_args("red dress", num_images=2, steps=4, sampler="lcm", seed=3),
                                                   "student", 1.0, api_name="/generate")
        record = json.loads(Path(files[-1]).read_text())
        assert len(gallery) == 2 and record["settings"]["scheduler"] == "lcm" and record["settings"]["num_inference_steps"] == 4
        assert Path(record["model"]["stages"][0]).name == "student"
        teacher = client.predict(*generate_args("red dress", num_images=1, steps=3, sampler="dpm++", seed=3), "diffusion", 1.0,
                                 api_name="/generate")[2]
        assert json.loads(Path(teacher[-1]).read_text())["settings"]["scheduler"] == "dpm++"
    finally:
        demo.close()


def test_the_app_makes_a_few_step_models_first_image_alone_then_the_rest_in_one_batch_on_its_compute_thread(
        distilled: dict[str, Path], tmp_path: Path) -> None:
    import threading

    from fashiongen.app.compute import ComputeThread
    from fashiongen.app.service import GenerateRequest, Studio

    compute = ComputeThread()
    pipe = compute.run(FashionGenPipeline.from_pretrained, distilled["folder"] / "student")  # loaded where it samples
    studio = Studio({"student": pipe}, output_dir=str(tmp_path / "studio"), compute=compute)
    ran_on: set[str] = set()
    encode = pipe.encode_prompts

    def recording(*args: object, **kwargs: object) -> object:  # which thread the model work runs on
        ran_on.add(threading.current_thread().name)
        return encode(*args, **kwargs)

    pipe.encode_prompts = recording  # type: ignore[method-assign]
    updates = list(studio.generate(GenerateRequest("red dress", num_images=4, steps=4, sampler="lcm", seed=5)))
    shown = [len(update.images) for update in updates]
    assert shown == [1, 4, 4] and not any("step" in caption for u in updates for _, caption in u.images), shown
    assert "Images 2-4 of 4" in updates[1].status and updates[-1].done
    assert ran_on and all(name.startswith(compute.name + "_") for name in ran_on), ran_on
    # the same images as one at a time: the batch changes nothing but the time (seeds make the images)
    alone = [np.asarray(pipe.generate_images(["red dress"], [seed], pipe.sampling_settings(num_inference_steps=4,
                                                                                          scheduler="lcm"))[0], np.int16)
             for seed in updates[-1].extra["seeds"]]
    batched = [np.asarray(image, np.int16) for image, _ in updates[-1].images]
    assert max(np.abs(a - b).max() for a, b in zip(alone, batched)) <= 1
    studio.close()
    compute.close()


def test_a_compute_thread_runs_nested_calls_in_place_and_hands_back_errors() -> None:
    import threading

    from fashiongen.app.compute import ComputeThread

    compute, other = ComputeThread(), ComputeThread()
    outer = compute.run(lambda: (threading.current_thread().name, compute.run(lambda: threading.current_thread().name),
                                 other.run(lambda: threading.current_thread().name)))
    assert outer[0].startswith(compute.name + "_") and outer[1] == outer[0]  # nested: no deadlock on the one worker
    assert outer[2].startswith(other.name + "_") and other.name != compute.name  # each studio its own thread
    with pytest.raises(ValueError, match="refused"):
        compute.run(lambda: (_ for _ in ()).throw(ValueError("refused")))
    compute.close()
    other.close()
