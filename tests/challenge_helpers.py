"""A tiny challenge for the challenge-server tests: garment photos as the hidden set, submissions made from them with
noise (more noise, worse scores), archives, a server on 127.0.0.1 in a thread or a process, and a database of each kind."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from fashiongen.challenge.config import ChallengeConfig
from fashiongen.challenge.organiser import init_challenge, open_challenge
from fashiongen.challenge.store import Challenge
from fashiongen.submission import SUBMISSION_FORMAT, SUBMISSION_VERSION, CaptionItem, captions_sha256, image_name

RESOLUTION = 32
NUM_CAPTIONS = 12
POSTGRES_ENV = "FASHIONGEN_TEST_POSTGRES"  # an admin URL whose role may CREATE DATABASE; .ci/run sets it


class Clock:
    """A settable clock for the daily limit and the phase."""

    def __init__(self, now: float | None = None) -> None:
        self.now = time.time() if now is None else now

    def __call__(self) -> float:
        return self.now


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# ---------------------------------------------------------------- databases


def postgres_admin_url() -> str | None:
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        if os.environ.get("CI"):
            pytest.fail(f"CI runs the challenge tests on PostgreSQL too, but {POSTGRES_ENV} is not set (see .ci/run)")
        return None
    return url


# ---------------------------------------------------------------- the challenge


def make_challenge(folder: Path, source: Path, database: str | None = None, **settings: Any) -> Challenge:
    """Init a challenge (about 10 s: the evaluation networks); tests clone one with `clone_challenge` instead."""
    """Init a challenge of NUM_CAPTIONS captions at RESOLUTION px in `folder` (SQLite inside it unless `database`)."""
    config = ChallengeConfig(**{"title": "Test challenge", "resolution": RESOLUTION, "per_caption": 1, "daily_limit": 5,
                                "kid_subset_size": 100, "lease_seconds": 30, **settings})
    init_challenge(folder, str(source), "all", config, database=database, limit=NUM_CAPTIONS, train_split="all",
                   show_progress=False)
    challenge, _ = open_challenge(folder)
    return challenge


# ---------------------------------------------------------------- submissions


def source_photos(source: Path) -> dict[str, np.ndarray]:
    rows = [json.loads(line) for line in (source / "captions.jsonl").read_text().splitlines() if line.strip()]
    return {str(row["id"]): np.asarray(Image.open(source / row["file"]).convert("RGB").resize((RESOLUTION, RESOLUTION)))
            for row in rows}


def write_submission(folder: Path, captions: list[dict[str, Any]], photos: dict[str, np.ndarray], noise: float,
                     seed: int = 0, resolution: int = RESOLUTION, per_caption: int = 1) -> Path:
    """A valid submission folder: each caption's hidden photo plus Gaussian noise of std `noise` (0: the photo itself)."""
    rng = np.random.default_rng(seed)
    items = [CaptionItem(c["id"], c["caption"], c.get("attributes", {})) for c in captions]
    (folder / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for item in items:
        for k in range(per_caption):
            base = photos[item.id].astype(np.float32)
            if base.shape[0] != resolution:
                base = np.asarray(Image.fromarray(base.astype(np.uint8)).resize((resolution, resolution)), np.float32)
            pixels = np.clip(base + rng.normal(0, noise, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / image_name(item.id, k))
            lines.append({"file": image_name(item.id, k), "caption_id": item.id, "caption": item.caption, "k": k, "seed": k})
    header = {"format": SUBMISSION_FORMAT, "version": SUBMISSION_VERSION, "fingerprint": "test", "model": {"device": "cpu", "dtype": "float32"},
              "settings": {}, "resolution": resolution, "per_caption": per_caption, "base_seed": 0, "use_attributes": False,
              "num_captions": len(items), "captions_sha256": captions_sha256(items), "created": "2026-12-04T00:00:00+0000"}
    (folder / "submission.json").write_text(json.dumps(header))
    (folder / "submission.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return folder


def zip_bytes(folder: Path, top: str = "") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                bundle.write(path, top + str(path.relative_to(folder)))
    return buffer.getvalue()


# ---------------------------------------------------------------- servers


class ThreadServer:
    """The app under uvicorn on 127.0.0.1 in a thread of this process (so its clock can be set)."""

    def __init__(self, challenge: Challenge, folder: Path) -> None:
        import uvicorn

        from fashiongen.challenge.server import create_app

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(create_app(challenge, folder), host="127.0.0.1", port=self.port, log_level="warning",
                                limit_concurrency=200)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        wait_for(self.url)
        return self

    def __exit__(self, *_: Any) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def wait_for(url: str, timeout: float = 60.0, process: subprocess.Popen | None = None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}: {process.stderr.read() if process.stderr else ''}")
        try:
            if httpx.get(url + "/api/challenge", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer in {timeout} s")


def start_process(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "fashiongen.challenge", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


@dataclass
class Template:
    """An initialised challenge to clone: a folder (SQLite) or a PostgreSQL database made a template."""

    backend: str
    folder: Path
    database: str | None = None


def make_template(backend: str, root: Path, source: Path) -> Template:
    if backend == "sqlite":
        make_challenge(root / "template", source)
        return Template(backend, root / "template")
    admin = postgres_admin_url()
    if admin is None:
        pytest.skip(f"no PostgreSQL: set {POSTGRES_ENV}=postgresql://user:password@127.0.0.1/postgres")
    import psycopg

    name = f"fg_template_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    url = admin.rsplit("/", 1)[0] + "/" + name
    challenge = make_challenge(root / "template", source, database=url)
    challenge.db.close()
    return Template(backend, root / "template", url)


def drop_template(template: Template) -> None:
    if template.database:
        import psycopg

        with psycopg.connect(postgres_admin_url(), autocommit=True) as connection:
            connection.execute(f"DROP DATABASE IF EXISTS {template.database.rsplit('/', 1)[1]} WITH (FORCE)")


def clone_challenge(template: Template, folder: Path, clock: Clock | None = None, **settings: Any) -> Challenge:
    """A fresh copy of the template challenge in `folder` (and a database of its own), with `settings` changed."""
    shutil.copytree(template.folder, folder)
    if template.database:
        import psycopg

        admin = postgres_admin_url()
        name = f"fg_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {name} TEMPLATE {template.database.rsplit('/', 1)[1]}")
        url = admin.rsplit("/", 1)[0] + "/" + name
        (folder / "database.json").write_text(json.dumps({"database": url}))
        CLONES.append(url)
    challenge, _ = open_challenge(folder, clock or time.time)
    if settings:
        with challenge.db.transaction() as tx:
            challenge.write_config(replace(challenge.config, **settings), tx)
    return challenge


CLONES: list[str] = []


def drop_clones() -> None:
    import psycopg

    admin = postgres_admin_url()
    while CLONES:
        name = CLONES.pop().rsplit("/", 1)[1]
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
