"""The challenge leaderboard screenshot (docs/challenge/leaderboard.png): a small but real demo challenge, made,
entered, scored and served the way an organiser and teams would, then photographed by headless Chromium.

    .venv/bin/python docs/challenge/make_screenshot.py [--products ../shared/data/fashion-products] [--out docs/challenge/leaderboard.png]

What it does, in a scratch folder (deleted afterwards unless --keep):
  * `init`: 48 captions of the fashion-products validation split at 64 px as the hidden set (real-vs-real floor from
    the train split), the phase open from 2026-11-01 to 2027-01-31;
  * five teams, each entering one to three submissions on different days with `python -m fashiongen.challenge submit`
    over HTTP. Their "generator" is retrieval: for each caption, a train-split photo of the same category, colour and
    gender (never the hidden photo), picked at random for a share of the captions, then blurred and noised by the
    team's own amounts; less damage and fewer random picks, better scores, and later entries improve;
  * a scoring Worker drains the queue; nothing is closed, so `/` is the public leaderboard;
  * Debian's Chromium (playwright, as tests/test_app_browser.py drives it) saves a full-page screenshot 1200 px wide.

Takes a few minutes on a 2-core CPU (Inception runs on ~600 images at 64 px).
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import logging
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image, ImageFilter

from fashiongen.challenge.__main__ import main as challenge_main
from fashiongen.challenge.config import ChallengeConfig
from fashiongen.challenge.organiser import init_challenge, open_challenge
from fashiongen.challenge.scoring import read_photos
from fashiongen.challenge.worker import Worker
from fashiongen.submission import SUBMISSION_FORMAT, SUBMISSION_VERSION, CaptionItem, captions_sha256, image_name

ROOT = Path(__file__).resolve().parents[2]
PRODUCTS = ROOT.parent / "shared" / "data" / "fashion-products"
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-quic", "--no-first-run", "--disable-sync", "--hide-scrollbars"]
CAPTIONS, RESOLUTION = 48, 64

POOL = 2000  # train-split photos the teams' retrieval "generators" draw from
# team -> its entries in order: (day of the phase, hour, Gaussian blur radius, noise std in 0-255 units,
# share of captions given a random photo instead of a matching one)
TEAMS = {
    "atelier-ai": [(3, 10, 1.2, 10.0, 0.3), (17, 15, 0.6, 5.0, 0.15), (41, 9, 0.3, 2.0, 0.05)],
    "stitch-lab": [(8, 22, 1.5, 14.0, 0.4), (36, 11, 0.8, 5.0, 0.2)],
    "couture-diffusion": [(12, 14, 1.0, 12.0, 0.3)],
    "runway-gan": [(5, 18, 2.0, 24.0, 0.6), (29, 8, 1.4, 16.0, 0.45)],
    "pixel-tailor": [(33, 20, 2.2, 32.0, 0.7)],
}
PHASE_START = "2026-11-01T00:00:00Z"
PHASE_END = "2027-01-31T23:59:59Z"


class Clock:
    """The challenge's clock, set to each entry's time so the page shows a plausible history."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def degrade(photo: np.ndarray, blur: float, noise: float, rng: np.random.Generator) -> np.ndarray:
    image = Image.fromarray(photo)
    if blur > 0:
        image = image.filter(ImageFilter.GaussianBlur(blur))
    pixels = np.asarray(image, np.float32) + rng.normal(0.0, noise, photo.shape)
    return np.clip(pixels, 0, 255).astype(np.uint8)


def retrieve(captions: list[CaptionItem], pool: list[CaptionItem], photos: list[np.ndarray], random_share: float,
             rng: np.random.Generator) -> list[np.ndarray]:
    """Per caption, a random pool photo of the same category, colour and gender (else category, else any); a
    random photo of the pool for a `random_share` of the captions."""
    keys = [("category", "colour", "gender"), ("category", "colour"), ("category",)]
    index = {key: {} for key in keys}
    for position, item in enumerate(pool):
        for key in keys:
            index[key].setdefault(tuple(item.attributes.get(k) for k in key), []).append(position)
    picked = []
    for item in captions:
        matches = next((found for key in keys if (found := index[key].get(tuple(item.attributes.get(k) for k in key)))),
                       None)
        if matches is None or rng.random() < random_share:
            matches = range(len(pool))
        picked.append(photos[int(rng.choice(matches))])
    return picked


def write_submission(folder: Path, captions: list[CaptionItem], photos: list[np.ndarray], blur: float, noise: float,
                     seed: int, team: str) -> Path:
    """A submission folder as `python -m fashiongen.challenge`'s entrants make one: each caption's picked photo, damaged."""
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True)
    lines = []
    for item, photo in zip(captions, photos):
        Image.fromarray(degrade(photo, blur, noise, rng)).save(folder / image_name(item.id, 0))
        lines.append({"file": image_name(item.id, 0), "caption_id": item.id, "caption": item.caption, "k": 0, "seed": seed})
    header = {"format": SUBMISSION_FORMAT, "version": SUBMISSION_VERSION, "fingerprint": f"demo-{team}",
              "model": {"device": "cpu", "dtype": "float32"}, "settings": {"blur": blur, "noise": noise},
              "resolution": RESOLUTION, "per_caption": 1, "base_seed": seed, "use_attributes": False,
              "num_captions": len(captions), "captions_sha256": captions_sha256(captions),
              "created": "2026-12-01T00:00:00+0000"}
    (folder / "submission.json").write_text(json.dumps(header))
    (folder / "submission.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return folder


class Served:
    """The challenge's app under uvicorn on 127.0.0.1 in a thread (the clock is shared with this process)."""

    def __init__(self, challenge, folder: Path) -> None:
        import uvicorn

        from fashiongen.challenge.server import create_app

        self.url = f"http://127.0.0.1:{free_port()}"
        config = uvicorn.Config(create_app(challenge, folder), host="127.0.0.1", port=int(self.url.rsplit(":", 1)[1]),
                                log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Served:
        self.thread.start()
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(self.url + "/api/challenge", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise TimeoutError(f"{self.url} did not answer")

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def at(day: int, hour: int) -> float:
    start = dt.datetime.fromisoformat(PHASE_START.replace("Z", "+00:00"))
    return (start + dt.timedelta(days=day, hours=hour, minutes=7 * day % 60)).timestamp()


def screenshot(url: str, out: Path, width: int) -> bytes:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": width, "height": 200})  # full_page: as tall as the content
        outside: list[str] = []
        page.on("request", lambda request: outside.append(request.url) if not request.url.startswith(url) else None)
        page.goto(url + "/", wait_until="load")
        page.locator("#leaderboard").wait_for()
        shot = page.screenshot(full_page=True)
        browser.close()
    if outside:
        raise RuntimeError(f"the page fetched from elsewhere: {outside}")
    image = Image.open(io.BytesIO(shot)).convert("RGB")  # no alpha: a smaller PNG
    out.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(buffer, "PNG", optimize=True)
    out.write_bytes(buffer.getvalue())
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--products", default=str(PRODUCTS), help="the fashion-products folder (captions.jsonl, images/)")
    parser.add_argument("--out", default=str(Path(__file__).with_name("leaderboard.png")))
    parser.add_argument("--width", type=int, default=1200)
    parser.add_argument("--keep", action="store_true", help="keep the scratch challenge folder and print its path")
    options = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    started = time.time()

    scratch = Path(tempfile.mkdtemp(prefix="fashiongen-challenge-screenshot-"))
    folder = scratch / "challenge"
    try:
        config = ChallengeConfig(title="FashionGen text-to-image challenge", resolution=RESOLUTION, per_caption=1,
                                 daily_limit=5, phase_start=PHASE_START, phase_end=PHASE_END, kid_subset_size=100)
        init_challenge(folder, options.products, "validation", config, limit=CAPTIONS, train_split="train",
                       show_progress=False)
        print(f"init: {time.time() - started:.0f} s", flush=True)
        clock = Clock(at(0, 9))
        challenge, _ = open_challenge(folder, clock)
        captions = [CaptionItem(c.id, c.caption, c.attributes) for c in challenge.captions()]
        pool, pool_photos = read_photos(options.products, "train", RESOLUTION, POOL)
        tokens = {team: challenge.add_team(team) for team in TEAMS}
        entries = sorted((day, hour, team, version, blur, noise, share) for team, plan in TEAMS.items()
                         for version, (day, hour, blur, noise, share) in enumerate(plan, start=1))
        with Served(challenge, folder) as served:
            for number, (day, hour, team, version, blur, noise, share) in enumerate(entries):
                clock.now = at(day, hour)
                photos = retrieve(captions, pool, pool_photos, share, np.random.default_rng(1000 + number))
                entry = write_submission(scratch / "entries" / f"{team}-v{version}", captions, photos, blur, noise,
                                         seed=number, team=team)
                if challenge_main(["submit", served.url, str(entry), "--token", tokens[team]]) != 0:
                    raise RuntimeError(f"the upload of {entry.name} was refused")
            clock.now = at(44, 12)
            scored = Worker(challenge, folder / "work", name="screenshot", poll_seconds=0.2).run(drain=True)
            print(f"scored {scored} submissions: {time.time() - started:.0f} s", flush=True)
            for row in challenge.leaderboard("public"):
                print(f"  {row['rank']}. {row['team']:<18} FID {row['public']['fid']:7.1f}  entries {row['submissions']}")
            data = screenshot(served.url, Path(options.out), options.width)
        with Image.open(io.BytesIO(data)) as image:
            print(f"{options.out}: {image.width}x{image.height}, {len(data) / 1024:.0f} KiB, {time.time() - started:.0f} s")
    finally:
        if options.keep:
            print(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
