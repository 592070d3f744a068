"""Which model the app opens on (app/choice.py) and what its header says of each model's training (issue 36): the best
images on the validation captions first, a student only once it is within 10% of its teacher, and the training of
every run a model's weights went through."""

from __future__ import annotations

import pytest

from fashiongen.app import Studio, model_names
from fashiongen.app.choice import Quality, best_first, leading_number
from fashiongen.config import TextConfig
from fashiongen.models.files import BUNDLED_GAN, BUNDLED_STUDENT
from fashiongen.pipeline import FashionGenPipeline, default_model_path
from fashiongen.pipeline.publishing import training_summary
from fashiongen.text import CaptionEncoder
from pipeline_helpers import export_tiny

TEACHER = {"FID": "80.0", "R-precision (1 of 100)": "0.540 ± 0.005 (real photos 0.69)", "colour accuracy": "0.64 (real 0.68)"}


def test_scores_are_read_from_the_cards_words() -> None:
    assert leading_number("155.25 (real-vs-real floor 39.40)") == 155.25 and leading_number(0.5) == 0.5
    assert leading_number("n/a") is None and leading_number(None) is None and leading_number(float("nan")) is None
    teacher = Quality(80.0, 0.54, 0.64)
    assert Quality(87.9, 0.487, 0.577).within(teacher)  # each at most 10% worse
    assert not Quality(88.1, 0.54, 0.64).within(teacher)  # FID 10.1% worse
    assert not Quality(80.0, 0.54, 0.575).within(teacher)  # colour 10.2% worse
    assert not Quality(70.0, None, 0.7).within(teacher)  # an unrecorded score earns nothing


@pytest.fixture()
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, FashionGenPipeline]:
    root = tmp_path_factory.mktemp("choice")
    encoder = CaptionEncoder(TextConfig(cache_dir=""))
    return {name: FashionGenPipeline.from_pretrained(export_tiny(root / name, encoder, seed=seed))
            for seed, name in enumerate(("fast", "good", "unscored"))}


def scored(pipeline: FashionGenPipeline, metrics: dict[str, str], teacher: FashionGenPipeline | None = None
           ) -> FashionGenPipeline:
    """The pipeline with a card's metrics (as `release --report` writes them) and, for a distilled student, the
    checksum of its teacher's weights (as distillation writes it)."""
    base = pipeline.stages[0]
    sections: dict[str, object] = {"metrics": metrics}
    if teacher is not None:
        sections["student"] = {"teacher": {"sha256": teacher.stages[0].info.weights.sha256}}
    base.info = base.info.replace(**sections)
    return pipeline


def test_the_page_opens_on_the_lowest_fid_and_unscored_models_follow(tiny: dict[str, FashionGenPipeline]) -> None:
    scored(tiny["good"], {"FID": "70.1", "R-precision (1 of 100)": "0.56"})
    scored(tiny["fast"], {"FID": "129.0 (real-vs-real floor 39.4)", "R-precision (1 of 100)": "0.38"})
    ordered = best_first({"unscored": tiny["unscored"], "fast": tiny["fast"], "good": tiny["good"]})
    assert list(ordered) == ["good", "fast", "unscored"]
    assert list(best_first({"unscored": tiny["unscored"]})) == ["unscored"]


def test_a_student_leads_only_within_ten_percent_of_its_teacher(tiny: dict[str, FashionGenPipeline]) -> None:
    teacher = scored(tiny["good"], TEACHER)
    student = scored(tiny["fast"], {"FID": "70.0", "R-precision (1 of 100)": "0.50", "colour accuracy": "0.50"}, teacher)
    assert list(best_first({"student": student, "teacher": teacher})) == ["teacher", "student"]  # colour 22% worse
    scored(student, {"FID": "79.0", "R-precision (1 of 100)": "0.53", "colour accuracy": "0.63"}, teacher)
    assert list(best_first({"student": student, "teacher": teacher})) == ["student", "teacher"]
    scored(student, {"FID": "87.9", "R-precision (1 of 100)": "0.49", "colour accuracy": "0.58"}, teacher)
    assert list(best_first({"teacher": teacher, "student": student})) == ["student", "teacher"]  # within 10%: its place
    scored(student, {"FID": "88.1", "R-precision (1 of 100)": "0.49", "colour accuracy": "0.58"}, teacher)
    assert list(best_first({"student": student, "teacher": teacher})) == ["teacher", "student"]
    other = scored(tiny["unscored"], {"FID": "75.0"})  # a student of another model: ranked by its own scores
    assert list(best_first({"other": other, "student": student, "teacher": teacher}))[0] == "other"


def test_the_training_summary_counts_every_run_of_a_continued_model() -> None:
    third = {"steps": 5600, "images_seen": 44800, "wall_time_s": 5359.5,
             "initialised_from": {"steps": 3200, "images_seen": 25600, "wall_time_s": 4750.5,
                                  "initialised_from": {"steps": 2500, "images_seen": 20000, "wall_time_s": 5395.8}}}
    assert training_summary("diffusion", third) == "11,300 training steps over 3 runs (90,400 images, 4.3 h)"
    assert training_summary("gan", {"steps": 8096, "images_seen": 259072}) == "8,096 training steps (259,072 images)"
    assert training_summary("student", {"steps": 813, "images_seen": 6504, "initialised_from": {"steps": 5600}}) == (
        "813 distillation steps (6,504 images) from its teacher")
    warm = {"steps": 1100, "images_seen": 8800, "initialised_from": {"sha256": "new", "steps": 4800, "student": {
        "steps": 813, "images_seen": 6504, "teacher_sha256": "old"}}}
    assert training_summary("student", warm) == ("1,913 distillation steps over 2 runs (15,304 images), the last 1,100 "
                                                 "from this teacher and the first from the model it was continued from")
    warm["initialised_from"]["student"]["teacher_sha256"] = "new"
    assert training_summary("student", warm) == "1,913 distillation steps over 2 runs (15,304 images) from its teacher"
    assert training_summary("diffusion", {}) == ""
    assert training_summary("diffusion", {"steps": 10, "initialised_from": {"steps": 5}}) == "15 training steps over 2 runs"


def test_the_shipped_models_open_on_the_teacher_and_the_header_tells_their_training() -> None:
    paths = [BUNDLED_STUDENT, default_model_path(), BUNDLED_GAN]
    loaded = [FashionGenPipeline.from_pretrained(path) for path in paths]
    ordered = best_first(dict(zip(model_names(loaded, [path.name for path in paths]), loaded)))
    assert list(ordered)[0] == "diffusion"  # the lowest FID; its student is not within 10% of it
    studio = Studio(ordered)
    try:
        assert "16,100 training steps over 4 runs (128,800 images" in studio.describe_model("diffusion")
        assert "distillation steps" in studio.describe_model("student")
        assert "FID 69.9, R-precision 0.62" in studio.describe_model("diffusion")
        assert "1,913 distillation steps over 2 runs" in studio.describe_model("student")
    finally:
        studio.close()
