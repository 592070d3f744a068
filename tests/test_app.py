"""The app through its HTTP API with gradio_client, as a script would use it: every endpoint, image counts and
sizes, seed reproducibility, validation messages, cancelling, and 8 clients at once."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from gradio_client.utils import QueueError
from PIL import Image

from app_helpers import RunningApp, app, generate_args, start_app  # noqa: F401 (app is a fixture)
from fashiongen.app import GenerateRequest, Studio
from fashiongen.pipeline import PipelineInputError, SamplingSettings


@pytest.fixture(scope="module")
def client(app: RunningApp) -> Client:
    return Client(app.url, verbose=False)


def pixels(path: str) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def test_every_endpoint_has_a_stable_api_name(client: Client) -> None:
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert set(endpoints) == {"/generate", "/interpolate", "/edit", "/nearest", "/cancel"}
    assert [p["parameter_name"] for p in endpoints["/generate"]["parameters"]] == [
        "description", "negative", "category", "gender", "colour", "season", "num_images", "steps", "guidance", "sampler",
        "seed", "random_seed", "model", "truncation"]


def test_generate_returns_the_images_with_their_seeds_and_the_downloads(client: Client) -> None:
    gallery, status, files, seed = client.predict(*generate_args("red floral summer dress", num_images=3, seed=7),
                                                  api_name="/generate")
    assert [item["caption"] for item in gallery] == ["seed 7", "seed 8", "seed 9"]
    assert all(Image.open(item["image"]).size == (32, 32) for item in gallery)
    assert seed == 7 and "3 images" in status
    names = [Path(f).name for f in files]
    assert names == ["fashiongen-seed7.png", "fashiongen-seed8.png", "fashiongen-seed9.png", "settings.json"]
    settings = json.loads(Path(files[-1]).read_text())
    assert settings["seeds"] == [7, 8, 9] and settings["settings"]["num_inference_steps"] == 3
    assert settings["description"] == "red floral summer dress" and settings["model"]["fingerprint"]
    assert np.array_equal(pixels(files[0]), pixels(gallery[0]["image"]))  # the download is the shown image, lossless


def test_the_same_seed_gives_the_same_images_and_other_seeds_differ(client: Client, app: RunningApp) -> None:
    first = client.predict(*generate_args("navy blue shirt", seed=11), api_name="/generate")[0]
    again = client.predict(*generate_args("navy blue shirt", seed=11), api_name="/generate")[0]
    other = client.predict(*generate_args("navy blue shirt", seed=12), api_name="/generate")[0]
    assert all(np.array_equal(pixels(a["image"]), pixels(b["image"])) for a, b in zip(first, again))
    assert np.array_equal(pixels(first[1]["image"]), pixels(other[0]["image"]))  # image k has seed + k
    assert not np.array_equal(pixels(first[0]["image"]), pixels(other[0]["image"]))
    direct = app.pipeline.generate_images(["navy blue shirt"], [11], SamplingSettings(3, 3.0))[0]
    assert np.abs(pixels(first[0]["image"]) - np.asarray(direct, dtype=np.int16)).max() <= 1  # same as the library


def test_a_random_seed_is_reported_and_reproduces_the_images(client: Client) -> None:
    gallery, _, _, seed = client.predict(*generate_args("white sneakers", num_images=1, random_seed=True), api_name="/generate")
    assert gallery[0]["caption"] == f"seed {seed}"
    again = client.predict(*generate_args("white sneakers", num_images=1, seed=seed), api_name="/generate")[0]
    assert np.array_equal(pixels(gallery[0]["image"]), pixels(again[0]["image"]))


def test_attribute_dropdowns_come_from_the_model_and_change_the_image(client: Client) -> None:
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    category = next(p for p in endpoints["/generate"]["parameters"] if p["parameter_name"] == "category")
    assert "Dresses" in json.dumps(category["python_type"]) or "Dresses" in json.dumps(category)
    plain = client.predict(*generate_args("a dress", num_images=1), api_name="/generate")[0]
    red = client.predict(*generate_args("a dress", num_images=1, category="Dresses", colour="Red"), api_name="/generate")[0]
    assert not np.array_equal(pixels(plain[0]["image"]), pixels(red[0]["image"]))


@pytest.mark.parametrize(("changes", "message"), [
    ({"description": "   "}, "description is empty"),
    ({"num_images": 0}, "Images must be a whole number from 1 to 8; got 0"),  # our request layer names the field
    ({"num_images": 9}, "Images must be a whole number from 1 to 8; got 9"),
    ({"steps": 500}, "Steps must be a whole number from 1 to 100; got 500"),
    ({"guidance": -1}, "Guidance scale must be a number from 0 to 20; got -1"),
    ({"seed": -5}, "Seed must be a whole number from 0 to 2147483647; got -5"),
    ({"sampler": "plms"}, "plms"),
    ({"colour": "Chartreuse"}, "Chartreuse"),
])
def test_bad_generate_input_gets_a_message_and_the_app_keeps_serving(client: Client, changes: dict, message: str) -> None:
    description = changes.pop("description", "red dress")
    with pytest.raises(AppError, match=message) as raised:
        client.predict(*generate_args(description, **changes), api_name="/generate")
    assert "Traceback" not in str(raised.value)
    gallery = client.predict(*generate_args("red dress", num_images=1), api_name="/generate")[0]
    assert len(gallery) == 1


def test_an_over_long_description_is_truncated_with_a_note(client: Client, app: RunningApp) -> None:
    _, status, _, _ = client.predict(*generate_args("a long red dress with many details " * 40, num_images=1),
                                     api_name="/generate")
    assert "tokens long" in status and f"first {app.pipeline.encoder.max_length}" in status


def test_interpolate_shows_a_strip_and_an_animation(client: Client, app: RunningApp) -> None:
    strip, gif, status, files = client.predict("red dress", "navy shirt", 3, 4, 5, 3, 3.0, "dpm++", api_name="/interpolate")
    assert Image.open(strip).size[0] >= 5 * 32 and "5 frames" in status
    animation = Image.open(gif)
    assert animation.format == "GIF" and animation.n_frames >= 5
    assert {Path(f).name for f in files} == {"interpolation.gif", "strip.png", "settings.json"}
    with pytest.raises(AppError, match=r"Sampler must be one of: ddim, dpm\+\+, euler; got 'ddpm'"):  # the dropdown offers deterministic ones only
        client.predict("red dress", "navy shirt", 3, 4, 5, 3, 3.0, "ddpm", api_name="/interpolate")
    with pytest.raises(AppError, match="Frames must be a whole number from 2 to 16; got 1"):
        client.predict("red dress", "navy shirt", 3, 4, 1, 3, 3.0, "dpm++", api_name="/interpolate")
    with pytest.raises(AppError, match="second description is empty"):
        client.predict("red dress", "", 3, 4, 5, 3, 3.0, "dpm++", api_name="/interpolate")


def test_edit_restyles_an_upload_and_a_painted_mask_keeps_the_rest(client: Client, garments16: Path, tmp_path: Path) -> None:
    photo = garments16 / "images" / "0.png"
    editor = {"background": handle_file(str(photo)), "layers": [], "composite": None}
    gallery, status, files = client.predict(editor, "a navy blue shirt", 0.8, 2, 4, 3.0, "dpm++", 5, api_name="/edit")
    assert [item["caption"] for item in gallery] == ["seed 5", "seed 6"] and "whole photo" in status
    assert {Path(f).name for f in files} >= {"fashiongen-edit-seed5.png", "settings.json"}
    layer = np.zeros((32, 32, 4), dtype=np.uint8)
    layer[:, 16:] = (255, 0, 255, 255)  # paint over the right half
    Image.fromarray(layer, "RGBA").save(tmp_path / "layer.png")
    masked = {"background": handle_file(str(photo)), "layers": [handle_file(str(tmp_path / "layer.png"))], "composite": None}
    gallery, status, _ = client.predict(masked, "a navy blue shirt", 1.0, 1, 4, 3.0, "dpm++", 5, api_name="/edit")
    result, original = pixels(gallery[0]["image"]), pixels(str(photo))
    assert "masked region repainted" in status
    assert np.abs(result[:, :15] - original[:, :15]).max() <= 2  # the unpainted half is the photo
    assert np.abs(result[:, 17:] - original[:, 17:]).mean() > 5  # the painted half changed
    with pytest.raises(AppError, match="Strength must be a number from 0 to 1; got 1.5"):
        client.predict(editor, "a navy blue shirt", 1.5, 1, 4, 3.0, "dpm++", 5, api_name="/edit")
    with pytest.raises(AppError, match="Upload a photo"):
        client.predict(None, "a navy blue shirt", 0.5, 1, 4, 3.0, "dpm++", 5, api_name="/edit")


def test_nearest_products_finds_the_product_itself_first(client: Client, garments16: Path) -> None:
    gallery, verdict = client.predict(handle_file(str(garments16 / "images" / "3.png")), 4, api_name="/nearest")
    assert len(gallery) == 4
    assert gallery[0]["caption"].startswith("Black boots 3") and "similarity 1.00" in gallery[0]["caption"]
    assert "Closest product: similarity 1.000" in verdict
    with pytest.raises(AppError, match="Choose an image first"):
        client.predict(None, 4, api_name="/nearest")


def test_eight_clients_at_once_each_get_their_own_images(app: RunningApp) -> None:
    prompts = ["red dress", "navy shirt", "white sneakers", "black boots", "green t-shirt", "yellow skirt", "grey sweater",
               "pink top"]

    def one(number: int) -> list[np.ndarray]:
        client = Client(app.url, verbose=False)
        gallery = client.predict(*generate_args(prompts[number], num_images=1, seed=100 + number), api_name="/generate")[0]
        return pixels(gallery[0]["image"])

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(8)))
    expected = app.pipeline.generate_images(prompts, [100 + n for n in range(8)], SamplingSettings(3, 3.0))
    for got, want in zip(results, expected):
        assert np.abs(got - np.asarray(want, dtype=np.int16)).max() <= 1
    assert Client(app.url, verbose=False).predict(*generate_args("red dress", num_images=1), api_name="/generate")[0]


# ------------------------------------------------------------------ the service behind the page


def test_generate_streams_previews_before_the_first_finished_image(app: RunningApp) -> None:
    studio = Studio(app.pipeline)
    updates = list(studio.generate(GenerateRequest("red dress", num_images=2, steps=6, seed=1)))
    first_finished = next(i for i, u in enumerate(updates) if any(caption == "seed 1" for _, caption in u.images))
    assert first_finished > 0 and "step" in updates[0].images[-1][1]  # a preview came first
    assert updates[-1].done and [caption for _, caption in updates[-1].images] == ["seed 1", "seed 2"]
    assert updates[-1].status.startswith(f"2 images by {next(iter(studio.pipelines))} in ")  # which model made them
    studio.close()


def test_cancel_stops_a_running_job_at_the_next_step(app: RunningApp) -> None:
    studio = Studio(app.pipeline)
    job = studio.generate(GenerateRequest("red dress", num_images=8, steps=50, seed=1), session="visitor")
    next(job)  # running: the first preview arrived
    assert studio.cancel("visitor") == 1
    rest = list(job)
    assert rest[-1].done and rest[-1].status.startswith("Stopped after") and len(rest[-1].images) < 8
    assert studio.cancel("visitor") == 0
    studio.close()


@pytest.mark.parametrize(("changes", "message"), [
    ({"num_images": 9}, "Number of images must be between 1 and 8, got 9"),
    ({"steps": 0}, "Steps must be between 1 and 100, got 0"),
    ({"guidance": float("nan")}, "Guidance scale must be a finite number"),
    ({"sampler": "plms"}, "Sampler 'plms' is not one of"),
    ({"seed": 2.5}, "Seed must be a whole number"),
    ({"attributes": {"colour": "Chartreuse"}}, "colour 'Chartreuse' is not one this model knows"),
])
def test_the_service_checks_what_the_page_cannot(app: RunningApp, changes: dict, message: str) -> None:
    with pytest.raises(PipelineInputError, match=message):
        next(Studio(app.pipeline).generate(GenerateRequest("red dress", **changes)))


def test_nearest_without_a_product_index_says_how_to_get_one(app: RunningApp) -> None:
    with pytest.raises(PipelineInputError, match="--products"):
        Studio(app.pipeline).nearest(np.zeros((32, 32, 3), dtype=np.uint8))


@pytest.mark.slow  # among the slowest of the fast tier (shipped models or a training run): full run only
def test_a_full_queue_refuses_politely(tmp_path: Path) -> None:
    small = start_app(tmp_path, None, max_queue=1)
    try:
        results: list[object] = []
        barrier = threading.Barrier(4)

        def one(_: int) -> None:
            client = Client(small.url, verbose=False)
            barrier.wait()
            try:
                results.append(client.predict(*generate_args("red dress", num_images=2, steps=30), api_name="/generate"))
            except QueueError as error:
                results.append(error)

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(one, range(4)))
        refused = [r for r in results if isinstance(r, QueueError)]
        assert refused and all("queue is full" in str(r).lower() for r in refused)
        assert len(results) - len(refused) >= 1
    finally:
        small.demo.close()
