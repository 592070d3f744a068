"""The app under hostile uploads, through its HTTP API on a real server: oversized files are refused while they
arrive, decompression bombs and huge images before they are decoded, garbage with a message, and the app keeps
serving. The files are tiny: a bomb is a few KB of PNG whose header says 20000x20000."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from app_helpers import RunningApp, generate_args, start_app
from hostile_files import write_png_bomb

EDIT = dict(description="a navy blue shirt", strength=0.8, num_images=1, steps=2, guidance=3.0, sampler="dpm++", seed=5)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> RunningApp:
    running = start_app(tmp_path_factory.mktemp("app"), None)
    yield running
    running.demo.close()


@pytest.fixture(scope="module")
def client(app: RunningApp) -> Client:
    return Client(app.url, verbose=False)


def edit(client: Client, photo: Path, layers: tuple[Path, ...] = ()) -> tuple:
    editor = {"background": handle_file(str(photo)), "layers": [handle_file(str(p)) for p in layers], "composite": None}
    return client.predict(editor, *EDIT.values(), api_name="/edit")


def still_serves(client: Client) -> None:
    gallery, status, _, _ = client.predict(*generate_args("red dress", num_images=1, steps=2), api_name="/generate")
    assert len(gallery) == 1 and "1 image" in status


@pytest.mark.parametrize(("name", "make", "message"), [
    ("bomb.png", lambda p: write_png_bomb(p, 20000, 20000), "400 megapixels .*over the limit of 16 megapixels"),
    ("huge.png", lambda p: write_png_bomb(p, 12000, 12000, bit_depth=8), "12000x12000 = 144 megapixels, over the limit of 16"),
    ("noise.png", lambda p: p.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes()),
     "not an image file"),
    ("cut.png", lambda p: p.write_bytes(_png_bytes()[:-200]), "corrupt or truncated"),
])
def test_a_hostile_photo_gets_a_message_naming_it_and_the_app_keeps_serving(client: Client, tmp_path: Path, name: str,
                                                                            make, message: str) -> None:
    make(tmp_path / name)
    started = time.perf_counter()
    with pytest.raises(AppError, match=message) as refused:
        edit(client, tmp_path / name)
    assert f"photo '{name}'" in str(refused.value) and time.perf_counter() - started < 10
    with pytest.raises(AppError, match=message):
        client.predict(handle_file(str(tmp_path / name)), 4, api_name="/nearest")
    still_serves(client)


def test_a_100_mb_upload_is_refused_while_it_arrives(app: RunningApp, client: Client) -> None:
    def body():
        yield b'--XX\r\nContent-Disposition: form-data; name="files"; filename="big.png"\r\nContent-Type: image/png\r\n\r\n'
        for _ in range(100):
            yield bytes(1 << 20)
        yield b"\r\n--XX--\r\n"

    started = time.perf_counter()
    response = httpx.post(f"{app.url}gradio_api/upload", content=body(), timeout=60,
                          headers={"Content-Type": "multipart/form-data; boundary=XX"})
    assert response.status_code == 413 and "maximum allowed size of 20971520 bytes" in response.text
    assert time.perf_counter() - started < 5
    assert client.config["max_file_size"] == 20 * 1024 * 1024  # the page and gradio_client refuse before sending
    still_serves(client)


def kept_input(app: RunningApp) -> Image.Image:
    """The photo as the app kept it (input.png of the newest edit job)."""
    return Image.open(sorted(app.demo.studio.output_dir.glob("*-edit-*/input.png"))[-1])


def test_a_large_jpeg_is_decoded_reduced_and_edited(app: RunningApp, client: Client, tmp_path: Path) -> None:
    Image.new("RGB", (4800, 3600), (30, 40, 120)).save(tmp_path / "camera.jpg", quality=80)  # 17 MP: over the limit in full
    gallery, status, _ = edit(client, tmp_path / "camera.jpg")
    assert len(gallery) == 1 and "whole photo" in status
    assert kept_input(app).size == (2400, 1800)  # decoded at 1/2 scale, the smallest that keeps 1024 px (Limits.photo_side) a side


def test_a_transparent_cut_out_is_edited_on_white(app: RunningApp, client: Client, tmp_path: Path) -> None:
    pixels = np.zeros((32, 32, 4), dtype=np.uint8)
    pixels[8:24, 8:24] = (30, 40, 120, 255)  # a navy square; the rest transparent black
    Image.fromarray(pixels, "RGBA").save(tmp_path / "cutout.png")
    edit(client, tmp_path / "cutout.png")
    kept = np.asarray(kept_input(app))
    assert (kept[0, 0] == 255).all() and (kept[16, 16] == (30, 40, 120)).all()


def test_a_painted_layer_of_other_proportions_is_refused_naming_both(client: Client, tmp_path: Path) -> None:
    Image.new("RGB", (32, 32), (200, 30, 40)).save(tmp_path / "photo.png")
    layer = np.zeros((16, 40, 4), dtype=np.uint8)
    layer[:, 20:] = (255, 0, 255, 255)
    Image.fromarray(layer, "RGBA").save(tmp_path / "layer.png")
    with pytest.raises(AppError, match="mask: its shape 40x16 .* does not match the photo's 32x32"):
        edit(client, tmp_path / "photo.png", (tmp_path / "layer.png",))
    Image.fromarray(np.zeros((16, 16, 4), dtype=np.uint8) + np.array([255, 0, 255, 255], dtype=np.uint8)).save(
        tmp_path / "half.png")  # the same proportions at half size: fitted to the photo, all of it repainted
    _, status, _ = edit(client, tmp_path / "photo.png", (tmp_path / "half.png",))
    assert "masked region repainted" in status


def test_three_huge_edits_at_once_leave_the_server_small(app: RunningApp, tmp_path: Path) -> None:
    write_png_bomb(tmp_path / "huge.png", 12000, 12000, bit_depth=8)  # 140 KB; 432 MB as RGB if it were decoded
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset this process's peak RSS (VmHWM): the server runs in it
    except OSError:
        pytest.skip("cannot reset the peak RSS here")

    def one(_: int) -> str:
        try:
            edit(Client(app.url, verbose=False), tmp_path / "huge.png")
        except AppError as error:
            return str(error)
        return "accepted"

    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(one, range(3)))
    assert all("12000x12000 = 144 megapixels, over the limit of 16" in answer for answer in answers)
    status = Path("/proc/self/status").read_text()
    peak, now = (int(status.split(f"{key}:")[1].split()[0]) * 1024 for key in ("VmHWM", "VmRSS"))
    assert peak - now < 100 * 2**20  # nothing near the 432 MB a full decode would take


def _png_bytes() -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()
