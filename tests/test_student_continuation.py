"""The few-step student beyond one run: a folder carrying it beside its teacher (republished, scored), a new run
continuing its adapters, and a continued teacher's re-distillation warm-started from them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fashiongen.config import ConfigError, TextConfig
from fashiongen.models.files import read_info
from fashiongen.pipeline import FashionGenPipeline
from fashiongen.settings import PipelineInputError
from fashiongen.text import CaptionEncoder
from pipeline_helpers import export_tiny
from student_helpers import student_overrides


@pytest.fixture(scope="module")
def encoder() -> CaptionEncoder:
    return CaptionEncoder(TextConfig(cache_dir=""))


def test_folder_offers_the_student_by_name_and_republishing_keeps_its_bytes(distilled: dict[str, Path], tmp_path: Path) -> None:
    from fashiongen.release import main as release

    folder = distilled["folder"]
    manifest = json.loads((folder / "pipeline.json").read_text())
    assert manifest["bases"] == {"student": "student"}
    info = read_info(folder / "student")
    assert info.section("student")["teacher"]["path"] == ".."
    card = (folder / "README.md").read_text()
    assert "## Base model `student`" in card and read_info(folder).sha256[:16] in card and "consistency-distilled" in card
    assert "- in all: 4 distillation steps (32 images) from its teacher" in card
    default = FashionGenPipeline.from_pretrained(folder)
    assert default.stages[0].family == "diffusion" and default.bases.keys() == {"student"}
    by_name = FashionGenPipeline.from_pretrained(folder, base="student")
    assert by_name.stages[0].family == "student" and by_name.fingerprint != default.fingerprint
    with pytest.raises(PipelineInputError, match="base 'teacher': .* other base models are student"):
        FashionGenPipeline.from_pretrained(folder, base="teacher")
    with pytest.raises(PipelineInputError, match="no other base model"):
        FashionGenPipeline.from_pretrained(distilled["teacher"], base="student")
    assert release([str(folder), str(tmp_path / "again"), "--dtype", "float32", "--critic", "none"]) == 0
    for name in ("model.json", "model.safetensors"):
        assert (tmp_path / "again" / "student" / name).read_bytes() == (folder / "student" / name).read_bytes()
    # a student of another model cannot be carried
    other = export_tiny(tmp_path / "other", CaptionEncoder(TextConfig(cache_dir="")), seed=3, attributes=True)
    assert release([str(other), str(tmp_path / "wrong"), "--critic", "none", "--student", str(distilled["export"])]) == 2
    assert not (tmp_path / "wrong").exists()


def test_a_students_report_goes_into_its_card_and_the_app_weighs_it_against_its_teacher(distilled: dict[str, Path],
                                                                                         tmp_path: Path) -> None:
    from fashiongen.app.choice import best_first, quality
    from fashiongen.release import main as release

    def report(fid: float, r_precision: float, colour: float) -> Path:
        path = tmp_path / f"report-{fid}.json"
        path.write_text(json.dumps({"meta": {"num_generated": 467, "reference": {"count": 467}, "settings": {
            "scheduler": "dpm++", "num_inference_steps": 20, "guidance_scale": 3.0}}, "metrics": {
            "fid": {"value": fid}, "r_precision": {"generated": {"mean": r_precision, "std": 0.01}},
            "attribute_accuracy": {"colour": {"generated": {"accuracy": colour}, "real": {"accuracy": 0.68}}}}}))
        return path

    out = tmp_path / "scored"
    assert release([str(distilled["folder"]), str(out), "--critic", "none", "--report", str(report(80.0, 0.55, 0.64)),
                    "--student-report", str(report(85.0, 0.52, 0.60)), "--dtype", "float32"]) == 0
    assert read_info(out / "student").metrics["FID"] == "85.00" and read_info(out).metrics["FID"] == "80.00"
    assert "- FID: 85.00" in (out / "README.md").read_text().split("## Base model `student`")[1].split("## Metrics")[0]
    teacher, student = FashionGenPipeline.from_pretrained(out), FashionGenPipeline.from_pretrained(out, base="student")
    assert quality(student).fid == 85.0 and quality(student).colour_accuracy == 0.60
    assert list(best_first({"student": student, "teacher": teacher})) == ["student", "teacher"]  # within 10% on each
    assert release([str(distilled["teacher"]), str(tmp_path / "none"), "--critic", "none",
                    "--student-report", str(report(85.0, 0.52, 0.60))]) == 2  # no student to record it for
    assert release([str(distilled["folder"]), str(tmp_path / "bad"), "--critic", "none",
                    "--student-report", str(tmp_path / "missing.json")]) == 2
    # its teacher's checksum is of the float32 weights: a float16 folder would orphan the student, so it is refused
    assert release([str(distilled["folder"]), str(tmp_path / "half"), "--critic", "none"]) == 2
    assert not (tmp_path / "none").exists() and not (tmp_path / "bad").exists() and not (tmp_path / "half").exists()


@pytest.mark.parametrize("content", [b"\xff\xfe" + bytes(range(256)) * 4, b"[1, 2]", b'{"metrics": [1]}', b'{"meta": 5}',
                                     b'{"metrics": {"fid": 3}}', b"", b"fifo", b"folder"])
def test_a_hostile_report_is_refused_in_one_line_naming_it(distilled: dict[str, Path], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str], content: bytes) -> None:
    import os

    from fashiongen.release import main as release

    report = tmp_path / "report.json"
    if content == b"fifo":
        os.mkfifo(report)
    elif content == b"folder":
        report.mkdir()
    else:
        report.write_bytes(content)
    for option in ("--report", "--student-report"):
        assert release([str(distilled["folder"]), str(tmp_path / "out"), "--critic", "none", "--dtype", "float32",
                        option, str(report)]) == 2
        error = [line for line in capsys.readouterr().err.splitlines() if line.strip() and not line.startswith("Loading weights")]
        assert len(error) == 1 and str(report) in error[0], error
        assert not (tmp_path / "out").exists()


def test_a_new_run_continues_a_saved_student_from_its_adapters(distilled: dict[str, Path], tmp_path: Path, garments16: Path,
                                                                text_cache_dir: Path, encoder: CaptionEncoder) -> None:
    from fashiongen.train import prepare
    from fashiongen.train.distill import adapter_state
    from safetensors.torch import load_file
    from training_helpers import tiny_config

    def config(**extra: object):
        return tiny_config(garments16, tmp_path / "runs", text_cache_dir, **student_overrides(distilled["teacher"], **extra))

    run = prepare(config(**{"distill.init_student": distilled["export"]}), show_progress=False)
    saved = load_file(distilled["export"] / "model.safetensors")
    started = adapter_state(run.ema.module)
    assert set(started) == set(saved) and all(torch.equal(started[k], saved[k]) for k in saved)
    assert run.teacher_facts["student"]["sha256"] == read_info(distilled["export"]).sha256
    other = export_tiny(tmp_path / "other", encoder, seed=4, attributes=True)
    for extra, message in (({"distill.init_student": other}, "a diffusion model, not a student"),
                           ({"distill.init_student": distilled["export"], "distill.lora_rank": 3}, "do not fit this config"),
                           ({"distill.init_student": distilled["export"], "train.init_from": other}, "another teacher")):
        with pytest.raises(ConfigError, match=message):
            prepare(config(**extra), show_progress=False)


def test_a_student_warm_starts_the_re_distillation_of_a_continued_teacher(distilled: dict[str, Path], tmp_path: Path,
                                                                           garments16: Path, text_cache_dir: Path) -> None:
    """A teacher continued with train.init_from names its start in its files: the old teacher's student may start the
    new teacher's distillation (its adapters are a warm start); a student of a model outside that lineage is refused."""
    from fashiongen.train import prepare, train
    from fashiongen.train.distill import teacher_lineage
    from safetensors.torch import load_file
    from training_helpers import tiny_config

    continued = train(prepare(tiny_config(garments16, tmp_path / "continued", text_cache_dir, **{
        "train.init_from": distilled["teacher"], "model.attributes": "[category, colour]", "train.max_steps": 2}),
        show_progress=False), show_progress=False) / "export"
    old_teacher = read_info(distilled["teacher"]).sha256
    run = prepare(tiny_config(garments16, tmp_path / "runs", text_cache_dir, **student_overrides(
        continued, **{"distill.init_student": distilled["export"]})), show_progress=False)
    assert teacher_lineage(run.teacher) == [read_info(continued).sha256, old_teacher]
    assert run.teacher_facts["sha256"] == read_info(continued).sha256
    assert run.teacher_facts["student"]["teacher_sha256"] == old_teacher
    saved = load_file(distilled["export"] / "model.safetensors")
    assert all(torch.equal(run.ema.module.state_dict()[k], saved[k]) for k in saved)
    # the continued teacher's own student cannot start a run on the older teacher: lineage points one way
    forward = train(run, show_progress=False) / "export"
    with pytest.raises(ConfigError, match="another teacher"):
        prepare(tiny_config(garments16, tmp_path / "back", text_cache_dir, **student_overrides(
            distilled["teacher"], **{"distill.init_student": forward})), show_progress=False)
