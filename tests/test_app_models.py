"""The app with two models, a diffusion model and a GAN, as the shipped app starts: the API takes a model name and
a truncation; each family's settings are checked by its own rules; the GAN interpolates and edits (by inversion); and in a real
browser, choosing the GAN shows its controls and regenerates live (debounced) as the description is typed."""

from __future__ import annotations

import re
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from app_helpers import RunningApp, generate_args, start_app
from fashiongen.app import GenerateRequest, Studio, model_names
from fashiongen.pipeline import PipelineInputError


@pytest.fixture(scope="module")
def two_models(tmp_path_factory: pytest.TempPathFactory, garments16: Path) -> RunningApp:
    running = start_app(tmp_path_factory.mktemp("app2"), garments16, gan=True)
    yield running
    running.demo.close()


@pytest.fixture(scope="module")
def client(two_models: RunningApp) -> Client:
    return Client(two_models.url, verbose=False)


def pixels(path: str) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def test_the_default_model_is_the_first_and_old_positional_calls_still_work(client: Client) -> None:
    gallery, status, files, _ = client.predict(*generate_args("red dress", num_images=1, seed=3), api_name="/generate")
    settings = json.loads(Path(files[-1]).read_text())
    assert settings["settings"]["scheduler"] == "dpm++" and Path(settings["model"]["stages"][0]).name == "model"


def test_the_gan_makes_four_images_in_one_forward_with_its_truncation(client: Client) -> None:
    args = generate_args("red dress", num_images=4, seed=5, sampler="one-step") + ["gan", 0.5]
    gallery, status, files, seed = client.predict(*args, api_name="/generate")
    assert [item["caption"] for item in gallery] == ["seed 5", "seed 6", "seed 7", "seed 8"]
    settings = json.loads(Path(files[-1]).read_text())
    assert settings["settings"]["scheduler"] == "one-step" and settings["settings"]["truncation"] == 0.5
    assert Path(settings["model"]["stages"][0]).name == "gan"
    again = client.predict(*generate_args("red dress", num_images=1, seed=6, sampler="one-step") + ["gan", 0.5],
                           api_name="/generate")[0]
    assert np.array_equal(pixels(again[0]["image"]), pixels(gallery[1]["image"]))  # image k has seed + k, batch or not
    other = client.predict(*generate_args("red dress", num_images=1, seed=6, sampler="one-step") + ["gan", 1.5],
                           api_name="/generate")[0]
    assert not np.array_equal(pixels(other[0]["image"]), pixels(gallery[1]["image"]))  # truncation changes the draw


def test_the_page_sends_the_diffusion_sampler_to_the_gan_and_it_takes_its_own(client: Client) -> None:
    # the page's sampler dropdown may still hold a diffusion name when the model radio changes: the model's default wins
    files = client.predict(*generate_args("red dress", num_images=1, sampler="dpm++") + ["gan", 0.8], api_name="/generate")[2]
    assert json.loads(Path(files[-1]).read_text())["settings"]["scheduler"] == "one-step"


@pytest.mark.parametrize("changes, message", [
    ({"model": "vae"}, "Model must be one of: diffusion, gan; got 'vae'"),
    ({"truncation": -1.0}, "Truncation must be a number from 0 to 3; got -1.0"),  # our request layer names the field
])
def test_each_model_refuses_what_it_does_not_take(client: Client, changes: dict, message: str) -> None:
    values = {"model": "gan", "truncation": 0.8, **changes}
    args = generate_args("red dress", num_images=1, **{k: v for k, v in changes.items() if k not in ("model", "truncation")})
    with pytest.raises(AppError, match=message):
        client.predict(*args, values["model"], values["truncation"], api_name="/generate")


def test_the_service_refuses_a_setting_the_model_does_not_use(two_models: RunningApp) -> None:
    # (the page hides those controls and does not send what they still hold; a script calling the service is told)
    studio: Studio = two_models.demo.studio
    with pytest.raises(PipelineInputError, match="Negative description: this model \\(gan\\) does not use it"):
        list(studio.generate(GenerateRequest("red dress", "stripes", num_images=1, model="gan")))
    with pytest.raises(PipelineInputError, match="Truncation: this model \\(diffusion\\) does not use it"):
        list(studio.generate(GenerateRequest("red dress", num_images=1, steps=2, model="diffusion", truncation=0.7)))
    assert studio.models == ["diffusion", "gan"] and studio.controls("gan")["live"] and not studio.controls("diffusion")["live"]


def test_the_gan_interpolates_and_edits(client: Client, garments16: Path) -> None:
    strip, gif, status, files = client.predict("red dress", "navy shirt", 3, 4, 5, 3, 3.0, "one-step", "gan", 0.8,
                                               api_name="/interpolate")
    assert "5 frames" in status and Image.open(strip).width > 3 * Image.open(strip).height
    editor = {"background": handle_file(str(garments16 / "images" / "3.png")), "layers": [], "composite": None}
    gallery, status, files = client.predict(editor, "a navy blue shirt", 0.8, 2, 4, 3.0, "one-step", 5, "gan", api_name="/edit")
    assert len(gallery) == 2 and "2 edits" in status
    assert json.loads(Path(files[-1]).read_text())["settings"]["scheduler"] == "one-step"


def test_model_names_are_the_family_unless_two_share_one(two_models: RunningApp) -> None:
    gan = two_models.demo.studio.pipelines["gan"]
    assert model_names([two_models.pipeline, gan]) == ["diffusion", "gan"]
    assert model_names([gan, gan], ["a", "b"]) == ["gan (a)", "gan (b)"]
    assert model_names([gan, gan], ["a", "a"]) == ["gan (a) #1", "gan (a) #2"]


CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists() and not os.environ.get("CI"), reason="Debian chromium is not installed")
def test_in_the_browser_the_gan_shows_its_controls_and_regenerates_as_you_type(two_models: RunningApp) -> None:
    from playwright.sync_api import sync_playwright

    from test_app_browser import FLAGS

    def generations() -> int:
        return len(list(two_models.output_dir.glob("*-generate-*")))

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(two_models.url, wait_until="domcontentloaded")
        page.locator("#description textarea").wait_for(timeout=60_000)
        assert page.locator("#negative").is_visible() and not page.locator("#truncation").is_visible()
        assert not page.locator("#live").is_visible()  # diffusion: 40 forwards an image, no live regeneration
        page.locator("#model").get_by_text("gan", exact=True).click()
        page.locator("#truncation").wait_for(state="visible", timeout=30_000)
        assert not page.locator("#negative").is_visible()
        page.locator("#live input").wait_for(state="visible")
        assert page.locator("#live input").is_checked()
        before = generations()
        page.locator("#description textarea").click()
        page.keyboard.type("red silk dress", delay=40)  # 14 changes, 40 ms apart: one burst
        try:
            page.locator("#status").filter(has_text=re.compile(r"images (by \S+ )?in ")).wait_for(timeout=60_000)
        except Exception:
            raise AssertionError(f"no live generation: status {page.locator('#status').inner_text()!r}, "
                                 f"{generations() - before} generated, page: {page.locator('body').inner_text()[:800]!r}") from None
        time.sleep(1.5)  # any late generation would have started by now
        made = generations() - before
        assert 1 <= made <= 3, made  # debounced: not one generation a keystroke
        gallery = page.locator("#gallery img")
        assert gallery.count() == 4  # no click on Generate
        settings = json.loads(sorted(two_models.output_dir.glob("*-generate-*"))[-1].joinpath("settings.json").read_text())
        assert settings["description"] == "red silk dress" and settings["settings"]["scheduler"] == "one-step"
        page.locator("#model").get_by_text("diffusion", exact=True).click()
        page.locator("#negative").wait_for(state="visible", timeout=30_000)
        assert not page.locator("#truncation").is_visible()
        browser.close()
