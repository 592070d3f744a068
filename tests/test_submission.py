"""Submission sets with a real tiny model on real files: layout, determinism, resume, refusal, validation, caption lists."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import write_fashiongen_h5
from PIL import Image
from pipeline_helpers import export_tiny

from fashiongen.config import TextConfig
from fashiongen.pipeline import FashionGenPipeline, SamplingSettings
from fashiongen.submission import (
    CaptionItem,
    SubmissionError,
    SubmissionSummary,
    caption_seed,
    generate_submission,
    read_caption_list,
    validate_submission,
)
from fashiongen.text import CaptionEncoder

REPO = Path(__file__).resolve().parents[1]
SETTINGS = SamplingSettings(num_inference_steps=2, guidance_scale=2.0, scheduler="ddim")
RESOLUTION, PER_CAPTION = 32, 2
CAPTIONS = [CaptionItem("1001", "a red silk slip dress", {"colour": "Red"}),
            CaptionItem("coat_2", "a navy wool coat with long sleeves and horn buttons"),
            CaptionItem("sneaker-3", "white leather sneakers")]


@pytest.fixture(scope="module")
def encoder() -> CaptionEncoder:
    return CaptionEncoder(TextConfig(cache_dir=""))


@pytest.fixture(scope="module")
def pipe(tmp_path_factory: pytest.TempPathFactory, encoder: CaptionEncoder) -> FashionGenPipeline:
    pipe = FashionGenPipeline.from_pretrained(export_tiny(tmp_path_factory.mktemp("m") / "model", encoder, resolution=16))
    pipe.show_progress = False
    return pipe


def _generate(pipe: FashionGenPipeline, out: Path, captions: list[CaptionItem] = CAPTIONS, per_caption: int = PER_CAPTION,
              settings: SamplingSettings = SETTINGS, resolution: int = RESOLUTION, **options) -> SubmissionSummary:
    return generate_submission(pipe, captions, out, per_caption, settings, resolution=resolution, show_progress=False,
                               **options)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, pipe: FashionGenPipeline) -> Path:
    """One uninterrupted run; tests that change a set work on a copy."""
    out = tmp_path_factory.mktemp("reference") / "submission"
    summary = _generate(pipe, out)
    assert (summary.written, summary.skipped, summary.total, summary.out_dir) == (6, 0, 6, out)
    return out


def _copy(reference: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(reference, tmp_path / "submission"))


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every file's bytes, mtime and inode: a rewritten file shows even when its bytes are the same."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_ino)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _lines(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "submission.jsonl").read_text().splitlines()]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fashiongen.submission", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120, check=False)


# ---------------------------------------------------------------- generation


def test_layout_lines_and_header(reference: Path, pipe: FashionGenPipeline) -> None:
    names = sorted(p.name for p in (reference / "images").iterdir())
    assert names == sorted(f"{c.id}_{k}.png" for c in CAPTIONS for k in range(PER_CAPTION))
    for name in names:
        with Image.open(reference / "images" / name) as image:
            assert (image.format, image.mode, image.size) == ("PNG", "RGB", (RESOLUTION, RESOLUTION))
    rows = _lines(reference)
    assert [(r["caption_id"], r["k"]) for r in rows] == [(c.id, k) for c in CAPTIONS for k in range(PER_CAPTION)]
    assert rows[2] == {"file": "images/coat_2_0.png", "caption_id": "coat_2", "caption": CAPTIONS[1].caption, "k": 0,
                       "seed": caption_seed("coat_2", 0, 0)}
    header = json.loads((reference / "submission.json").read_text())
    assert header["format"] == "fashiongen-submission" and header["version"] == 1
    assert header["fingerprint"] == pipe.fingerprint and header["model"]["resolutions"] == [16]
    assert header["settings"] == {"num_inference_steps": 2, "guidance_scale": 2.0, "scheduler": "ddim",
                                  "negative_prompt": "", "size": RESOLUTION}
    assert (header["resolution"], header["per_caption"], header["base_seed"], header["num_captions"]) == (32, 2, 0, 3)
    assert len(header["captions_sha256"]) == 64 and header["created"]


def test_seeds_depend_on_id_k_and_base_seed_only() -> None:
    seeds = {caption_seed(c.id, k, base) for c in CAPTIONS for k in range(3) for base in (0, 1)}
    assert len(seeds) == 18 and all(0 <= s < 2**31 for s in seeds)
    assert caption_seed("coat_2", 1, 0) == caption_seed("coat_2", 1, 0)


def test_fresh_runs_and_shards_give_identical_bytes(pipe: FashionGenPipeline, reference: Path, tmp_path: Path) -> None:
    _generate(pipe, tmp_path / "again", batch_size=1)  # another batching makes the same images
    _generate(pipe, tmp_path / "shard", captions=[CAPTIONS[2], CAPTIONS[0]])  # position in the list does not matter
    for name in (p.name for p in (reference / "images").iterdir()):
        assert (tmp_path / "again/images" / name).read_bytes() == (reference / "images" / name).read_bytes()
    for name in ("sneaker-3_0.png", "1001_1.png"):
        assert (tmp_path / "shard/images" / name).read_bytes() == (reference / "images" / name).read_bytes()


def test_resume_writes_only_what_is_missing(pipe: FashionGenPipeline, reference: Path, tmp_path: Path) -> None:
    out = _copy(reference, tmp_path)
    rows = _lines(out)
    for row in rows[4:]:  # killed before sneaker-3's images: deleted with their lines
        (out / row["file"]).unlink()
    # coat_2_1.png was written but the kill came before its line; then half a line of the next image
    partial = json.dumps(rows[4])[:30]
    (out / "submission.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:3]) + partial)
    (out / "images/.sneaker-3_0.png.x1y2.tmp").write_bytes(b"half a png")
    finished = {name: value for name, value in _snapshot(out).items() if name.endswith(".png") and "/." not in name}
    assert validate_submission(out)  # not valid before the resume

    summary = _generate(pipe, out)

    assert (summary.written, summary.skipped, summary.total) == (2, 4, 6)
    after = _snapshot(out)
    assert {name: after[name] for name in finished} == finished  # not rewritten, not even with the same bytes
    assert not (out / "images/.sneaker-3_0.png.x1y2.tmp").exists()
    assert _lines(out) == rows  # coat_2_1 listed without regenerating it; the partial line gone
    for name in ("sneaker-3_0.png", "sneaker-3_1.png"):  # resumed images equal uninterrupted ones
        assert (out / "images" / name).read_bytes() == (reference / "images" / name).read_bytes()
    assert validate_submission(out, CAPTIONS) == []
    again = _generate(pipe, out)
    assert (again.written, again.skipped) == (0, 6)


@pytest.mark.parametrize("change, field", [
    ({"settings": replace(SETTINGS, guidance_scale=3.0)}, "settings.guidance_scale"),
    ({"resolution": 24}, "resolution"),
    ({"per_caption": 3}, "per_caption"),
    ({"base_seed": 7}, "base_seed"),
    ({"captions": CAPTIONS[:2]}, "captions_sha256"),
    ("other model", "fingerprint"),
])
def test_another_model_or_setting_is_refused(change, field: str, pipe: FashionGenPipeline, encoder: CaptionEncoder,
                                             reference: Path, tmp_path: Path) -> None:
    out = _copy(reference, tmp_path)
    before = _snapshot(out)
    if change == "other model":
        pipe = FashionGenPipeline.from_pretrained(export_tiny(tmp_path / "other", encoder, seed=1, resolution=16))
        change = {}
    with pytest.raises(SubmissionError, match=rf"{field}: the folder has .* this run asks for .*new --out folder"):
        _generate(pipe, out, **change)
    assert _snapshot(out) == before


def test_images_without_a_header_are_refused(pipe: FashionGenPipeline, reference: Path, tmp_path: Path) -> None:
    out = _copy(reference, tmp_path)
    (out / "submission.json").unlink()
    with pytest.raises(SubmissionError, match="no submission.json"):
        _generate(pipe, out)


# ---------------------------------------------------------------- validation


def test_a_good_set_validates(reference: Path) -> None:
    assert validate_submission(reference) == []
    assert validate_submission(reference, CAPTIONS) == []
    problems = validate_submission(reference, CAPTIONS[:2] + [CaptionItem("skirt-9", "a pleated skirt")])
    assert any("sneaker-3" in p and "not in the caption list" in p for p in problems)
    assert "1 caption(s) of the list have no images in submission.jsonl: skirt-9" in problems


@pytest.mark.slow
def test_validator_names_each_bad_file(reference: Path, tmp_path: Path) -> None:
    out = _copy(reference, tmp_path)
    (out / "images/1001_0.png").unlink()
    shutil.copy(out / "images/1001_1.png", out / "images/1001_2.png")
    Image.new("RGB", (16, 16)).save(out / "images/coat_2_0.png")
    (out / "images/coat_2_1.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    Image.new("L", (RESOLUTION, RESOLUTION)).save(out / "images/sneaker-3_0.png")
    (out / "images/notes.txt").write_text("hello")

    problems = validate_submission(out)

    def about(name: str) -> str:
        found = [p for p in problems if name in p]
        assert len(found) == 1, (name, problems)
        return found[0]

    assert "missing" in about("images/1001_0.png")
    assert "extra file" in about("images/1001_2.png")
    assert "16x16 px, expected 32x32" in about("images/coat_2_0.png")
    assert "not a decodable PNG" in about("images/coat_2_1.png")
    assert "mode L, expected RGB" in about("images/sneaker-3_0.png")
    assert "not {caption_id}_{k}.png" in about("images/notes.txt")
    assert len(problems) == 6

    result = _cli("validate", str(out))
    assert result.returncode == 1
    assert "images/1001_0.png is listed in submission.jsonl but missing" in result.stdout
    assert "images/coat_2_1.png is not a decodable PNG" in result.stdout


def test_validator_wants_every_image_of_a_caption(reference: Path, tmp_path: Path) -> None:
    out = _copy(reference, tmp_path)
    rows = _lines(out)
    (out / "images/coat_2_1.png").unlink()
    (out / "submission.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows if r["file"] != "images/coat_2_1.png")
                                          + "{\"file\": \"images/x")
    problems = validate_submission(out)
    assert any("caption coat_2: 1 image(s), expected 2" in p for p in problems)
    assert any("submission.jsonl line 6 is not valid JSON" in p for p in problems)
    (out / "submission.json").unlink()
    assert validate_submission(out) == [f"{out / 'submission.json'} is missing"]


@pytest.mark.slow
def test_cli_ok_and_unreadable_input(reference: Path, tmp_path: Path) -> None:
    captions = tmp_path / "captions.jsonl"
    captions.write_text("".join(json.dumps({"id": c.id, "caption": c.caption}) + "\n" for c in CAPTIONS))
    result = _cli("validate", str(reference), "--captions", str(captions))
    assert (result.returncode, result.stdout.strip()) == (0, "OK: 6 images for 3 captions at 32x32"), result.stderr
    assert _cli("validate", str(tmp_path / "nowhere")).returncode == 2


# ---------------------------------------------------------------- caption lists


def test_caption_list_from_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "val.jsonl"
    path.write_text('{"id": 15970, "caption": "  Navy  shirt "}\n\n{"id": "b", "caption": "red dress", '
                    '"attributes": {"colour": "Red"}}\n')
    assert read_caption_list(path) == [CaptionItem("15970", "Navy shirt"), CaptionItem("b", "red dress", {"colour": "Red"})]


@pytest.mark.parametrize("bad_line, message", [
    ('{"id": "b", "caption": "red', "not valid JSON"),
    ('{"id": "b"}', 'needs a "caption"'),
    ('{"caption": "red dress"}', 'needs an "id"'),
    ('{"id": "b", "caption": "   "}', "caption is empty"),
    ('{"id": "a", "caption": "red dress"}', "duplicate id 'a'"),
    ('{"id": "../b", "caption": "red dress"}', "contains '/'"),
    ('{"id": "b\\\\c", "caption": "red dress"}', "contains '/', '\\' or NUL"),
    ('{"id": ".b", "caption": "red dress"}', "starts with '.'"),
])
def test_bad_caption_lines_are_named(bad_line: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / "val.jsonl"
    path.write_text('{"id": "a", "caption": "navy shirt"}\n\n' + bad_line + "\n")
    with pytest.raises(SubmissionError) as raised:
        read_caption_list(path)
    assert f"{path}:3: " in str(raised.value) and message in str(raised.value)


def test_empty_caption_list(tmp_path: Path) -> None:
    (tmp_path / "val.jsonl").write_text("\n")
    with pytest.raises(SubmissionError, match="no captions"):
        read_caption_list(tmp_path / "val.jsonl")


def test_caption_list_from_fashiongen_h5(tmp_path: Path) -> None:
    plain = write_fashiongen_h5(tmp_path / "fashiongen.h5", num_rows=6)
    items = read_caption_list(plain, split="all")  # a file without _train/_validation in its name has no split of its own
    assert [i.id for i in items] == [str(i) for i in range(6)]
    assert items[1].caption.startswith("Long sleeve wool sweater") and items[1].attributes["gender"] == "MEN"
    validation = write_fashiongen_h5(tmp_path / "fashiongen_validation.h5", num_rows=4)
    assert len(read_caption_list(validation)) == 4  # its own split
    with pytest.raises(SubmissionError, match=r"fashiongen_train.h5: no such file; the 'train' split of .* is read from it"):
        read_caption_list(validation, split="train")  # one file of a pair: the other split is its sibling's


def test_caption_list_from_the_bundled_photos(products_path: Path) -> None:
    items = read_caption_list(products_path, split="validation")
    assert 0 < len(items) < 9583 and len({i.id for i in items}) == len(items)
    assert all(i.caption for i in items) and "colour" in items[0].attributes
    assert read_caption_list(products_path / "captions.jsonl") == items  # a dataset's metadata file, not a caption list


def test_dataset_attributes_condition_an_attribute_model_by_the_names_and_values_it_knows(
        tmp_path: Path, encoder: CaptionEncoder) -> None:
    model = FashionGenPipeline.from_pretrained(export_tiny(tmp_path / "attr", encoder, resolution=16, attributes=True))
    model.show_progress = False
    record = {"category": "Dresses", "colour": "Teal", "gender": "Women", "usage": "Casual"}  # as a dataset row has them
    assert model.known_attributes(record) == {"category": "Dresses"}  # unknown colour value and unknown names dropped
    captions = [CaptionItem("1", "a silk dress", record), CaptionItem("2", "a silk dress", {"category": "Sneakers"})]
    _generate(model, tmp_path / "with", captions, per_caption=1, use_attributes=True)
    _generate(model, tmp_path / "without", captions, per_caption=1)
    header = json.loads((tmp_path / "with" / "submission.json").read_text())
    assert header["use_attributes"] is True
    for name in ("1_0.png", "2_0.png"):
        with Image.open(tmp_path / "with" / "images" / name) as a, Image.open(tmp_path / "without" / "images" / name) as b:
            assert a.tobytes() != b.tobytes(), name
