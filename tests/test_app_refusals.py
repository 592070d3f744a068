"""The app's refusals, through its HTTP API on a real server: a value outside a field's range or choices, of the wrong
type, too few values, or a file path the app never received is refused in one sentence naming the field, with one log
line and no traceback; a path is refused the same way whether it exists or not; good requests still work."""

from __future__ import annotations

import io
import json
import logging
import shutil
import uuid
from pathlib import Path

import gradio as gr
import httpx
import numpy as np
import pytest
from gradio.utils import get_upload_folder
from PIL import Image

from app_helpers import RunningApp, generate_args, start_app
from fashiongen.app.requests import Field, Refused, check_value

INTERPOLATE = ["red dress", "navy shirt", 3, 4, 3, 2, 3.0, "dpm++", "diffusion", 1.0]
EDIT = ["a navy blue shirt", 0.8, 1, 2, 3.0, "dpm++", 5, "diffusion"]


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> RunningApp:
    running = start_app(tmp_path_factory.mktemp("app"), None)
    yield running
    running.demo.close()


def call(app: RunningApp, api: str, data: list) -> tuple[str, dict | list]:
    """One request over Gradio's HTTP API (/gradio_api/call), as any client may send it (NaN included): the last event
    and its data."""
    body = json.dumps({"data": data})  # json.dumps writes NaN and Infinity; httpx's json= would refuse them
    posted = httpx.post(f"{app.url}gradio_api/call/{api}", content=body, headers={"Content-Type": "application/json"},
                        timeout=30)
    posted.raise_for_status()
    stream = httpx.get(f"{app.url}gradio_api/call/{api}/{posted.json()['event_id']}", timeout=120).text
    events = [line.removeprefix("event: ") for line in stream.splitlines() if line.startswith("event: ")]
    data_lines = [line.removeprefix("data: ") for line in stream.splitlines() if line.startswith("data: ")]
    return events[-1], json.loads(data_lines[-1])


def refused(app: RunningApp, api: str, data: list, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture) -> str:
    """The refusal's message, checked to come with one log line and no traceback."""
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="fashiongen.app"):
        event, payload = call(app, api, data)
    assert event == "error" and payload["title"] == "Please check the input", payload
    message = payload["error"]
    lines = [record for record in caplog.records if record.name == "fashiongen.app"]
    assert len(lines) == 1 and message in lines[0].getMessage() and lines[0].exc_info is None
    assert "Traceback" not in capfd.readouterr().err
    return message


def generate(**changes: object) -> list:
    return generate_args("red dress", **{"num_images": 1, "steps": 2, **changes}) + ["diffusion", 1.0]


@pytest.mark.parametrize(("api", "data", "message"), [
    ("generate", generate(steps=10**9), "Steps must be a whole number from 1 to 100; got 1000000000."),
    ("generate", generate(steps=-1), "Steps must be a whole number from 1 to 100; got -1."),
    ("generate", generate(steps=float("nan")), "Steps must be a whole number from 1 to 100; got nan."),
    ("generate", generate(steps="lots"), "Steps must be a whole number from 1 to 100; got 'lots'."),
    ("generate", generate(num_images=2.5), "Images must be a whole number from 1 to 8; got 2.5."),
    ("generate", generate(guidance=float("inf")), "Guidance scale must be a number from 0 to 20; got inf."),
    ("generate", generate(seed="abc"), "Seed must be a whole number from 0 to 2147483647; got 'abc'."),
    ("generate", generate(category="spaceship"), "Category must be one of: any, Dresses, Shirts, Sneakers; got 'spaceship'."),
    ("generate", generate(sampler=["dpm++"]), "Sampler must be one of: ddim, dpm++, euler, ddpm; got ['dpm++']."),
    ("generate", generate(random_seed="yes"), "Random seed must be true or false; got 'yes'."),
    ("generate", [{"text": "red"}, *generate()[1:]], "Description must be text; got {'text': 'red'}."),
    ("generate", generate()[:-2] + ["vae", 1.0], "Model must be one of: diffusion; got 'vae'."),
    ("generate", generate()[:-2] + ["diffusion", -1], "Truncation must be a number from 0 to 3; got -1."),
    ("generate", generate()[:-2], "This request sent 12 values but needs 14; missing: Model, Truncation."),
    ("interpolate", INTERPOLATE[:4] + [1] + INTERPOLATE[5:], "Frames must be a whole number from 2 to 16; got 1."),
    ("interpolate", INTERPOLATE[:7] + ["ddpm"] + INTERPOLATE[8:], "Sampler must be one of: ddim, dpm++, euler; got 'ddpm'."),
    ("edit", [None, "a shirt", 1.5, *EDIT[2:]], "Strength must be a number from 0 to 1; got 1.5."),
    ("nearest", [None, 0], "Products must be a whole number from 1 to 16; got 0."),
])
def test_a_bad_value_is_refused_naming_its_field(app: RunningApp, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture,
                                                 api: str, data: list, message: str) -> None:
    assert refused(app, api, data, caplog, capfd) == message


def file_data(path: str) -> dict:
    return {"path": path, "meta": {"_type": "gradio.FileData"}}


@pytest.fixture(scope="module")
def weights(app: RunningApp) -> str:
    return str(next(Path(app.pipeline.stages[0].source).glob("*.safetensors")))


@pytest.fixture()
def link_in_uploads(weights: str) -> str:
    """A link inside Gradio's upload folder to the model's weights (a file the app must not read for a visitor)."""
    folder = Path(get_upload_folder()) / f"fashiongen-test-{uuid.uuid4().hex}"
    folder.mkdir(parents=True)
    (folder / "photo.png").symlink_to(weights)
    yield str(folder / "photo.png")
    shutil.rmtree(folder)


@pytest.mark.parametrize("smuggled", ["/etc/passwd", "weights", "/no/such/photo.png", "escape", "link",
                                      "http://127.0.0.1:9/photo.png", "meta-less"])
def test_a_smuggled_path_is_refused_naming_the_field(app: RunningApp, caplog: pytest.LogCaptureFixture,
                                                     capfd: pytest.CaptureFixture, weights: str, link_in_uploads: str,
                                                     smuggled: str) -> None:
    path = {"weights": weights, "link": link_in_uploads, "meta-less": "/etc/passwd",
            "escape": f"{get_upload_folder()}/../../etc/passwd"}.get(smuggled, smuggled)
    payload = {"path": path} if smuggled == "meta-less" else file_data(path)
    same = "must be an image uploaded to this app (files elsewhere on the server and URLs are not read)."
    assert refused(app, "edit", [{"background": payload, "layers": [], "composite": None}, *EDIT], caplog, capfd) == f"Photo {same}"
    assert refused(app, "edit", [{"background": None, "layers": [payload], "composite": None}, *EDIT], caplog, capfd) == f"Photo {same}"
    assert refused(app, "nearest", [payload, 4], caplog, capfd) == f"Design {same}"


def test_a_valid_request_and_a_real_upload_still_work(app: RunningApp) -> None:
    event, (gallery, status, _, _) = call(app, "generate", generate())
    assert event == "complete" and len(gallery) == 1 and "1 image" in status
    buffer = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), 120, dtype=np.uint8)).save(buffer, "PNG")
    uploaded = httpx.post(f"{app.url}gradio_api/upload", files={"files": ("design.png", buffer.getvalue(), "image/png")}).json()[0]
    event, payload = call(app, "nearest", [file_data(uploaded), 4])
    assert event == "error" and "No product index is loaded" in payload["error"]  # past the checks: the app has no index


def test_the_checks_take_what_the_page_sends() -> None:
    steps = Field("Steps", gr.Slider, 1, 100, step=1, whole=True)
    for value in (1, 100, 20.0):
        check_value(steps, value)
    for value in (True, 0, 101, 2.5, None, "20"):
        with pytest.raises(Refused, match="Steps must be a whole number from 1 to 100"):
            check_value(steps, value)
