"""The challenge's HTTP API and pages (FastAPI; pages rendered on the server with Jinja2).

    python -m fashiongen.challenge serve CHALLENGE_DIR [--host 127.0.0.1] [--port 8000]

API (the OpenAPI schema is at /openapi.json; no Swagger page, which would load scripts from a CDN): `GET /api/challenge`, `GET /api/captions` (the captions to generate for),
`POST /api/submissions` (the archive as the request body, `Authorization: Bearer TOKEN`), `GET /api/submissions`
and `GET|DELETE /api/submissions/{id}` (a team's own), `GET /api/leaderboard` and, once the phase has closed,
`GET /api/leaderboard/private`. Pages: `/` (the leaderboard), `/team` and `/jury` (login with a token; a session
cookie, SameSite=Strict, and a CSRF token on every form).

No endpoint serves a reference photo (the server never has them: only their statistics are stored), another
team's submissions or scores, or a private score before the phase closes. Uploads are streamed to disk under a
cap, checked as archives before extraction, and checked as submission folders before they are accepted.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import socket
import threading
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Header, Path as PathParam, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape

from ..submission import CaptionItem, image_name
from ..utils import disk_problem, file_inside
from .archive import ArchiveError, ArchiveLimits, UploadTooLarge, extract_archive, receive_upload_async
from .config import METRICS, format_time
from .layout import archive_limits, layout_problems, summary
from .pages import add_pages
from .refusals import MAX_ID, SECURITY_HEADERS, bearer_token, check_name, install_refusals, responses
from .store import Account, Challenge, Refused

logger = logging.getLogger(__name__)


class NDJSONResponse(PlainTextResponse):
    media_type = "application/x-ndjson"


class Server:
    """State shared by the endpoints: the challenge, its folder's scratch space, the page templates."""

    def __init__(self, challenge: Challenge, folder: Path) -> None:
        self.challenge, self.folder = challenge, Path(folder)
        self.uploads = self.folder / "uploads" / f"{socket.gethostname()}-{os.getpid()}"  # one per server process
        self.jury_files = self.folder / "jury"
        clear_stale_uploads(self.folder / "uploads")
        self.uploads.mkdir(parents=True, exist_ok=True)
        self.pages = Environment(loader=PackageLoader("fashiongen.challenge", "templates"),
                                 autoescape=select_autoescape(["html"]))
        self.pages.filters["number"] = _number
        self.pages.filters["when"] = lambda text: str(text).replace("T", " ").replace("Z", " UTC") if text else "–"
        self._captions: list[CaptionItem] | None = None
        self.jury_lock = threading.Lock()
        self.rng = np.random.default_rng(secrets.randbits(64))

    @property
    def limits(self) -> ArchiveLimits:
        """What an upload may hold, sized to this challenge (layout.archive_limits)."""
        return archive_limits(self.challenge.config, len(self.captions))

    @property
    def captions(self) -> list[CaptionItem]:
        if self._captions is None:
            self._captions = [CaptionItem(c.id, c.caption, c.attributes) for c in self.challenge.captions()]
        return self._captions

    def page(self, name: str, status: int = 200, **values: Any) -> HTMLResponse:
        config = self.challenge.config
        start, end = self.challenge.phase()
        values = {"title": config.title, "metric": config.metric, "metric_text": METRICS[config.metric][1],
                  "phase_start": format_time(start), "phase_end": format_time(end),
                  "closed": self.challenge.clock() >= end, **values}
        return HTMLResponse(self.pages.get_template(name).render(**values), status_code=status)

    # ---------------------------------------------------------------- uploads

    def check_archive(self, archive: Path, scratch: Path) -> int:
        """The number of images of an uploaded archive that is a valid submission; ArchiveError or Refused if not."""
        root = extract_archive(archive, scratch, self.limits)
        problems = layout_problems(root, self.captions, self.challenge.config)
        if problems:
            raise Refused(400, f"not a valid submission: {summary(problems)}")
        return len(self.captions) * self.challenge.config.per_caption

    # ---------------------------------------------------------------- jury images

    def jury_image(self, submission_id: int, caption_id: str) -> Path:
        """A finalist's image of a caption, from its archive extracted once into the folder's jury/ space."""
        target = self.jury_files / str(submission_id)
        with self.jury_lock:
            if not target.is_dir():
                self.jury_files.mkdir(parents=True, exist_ok=True)
                scratch = self.jury_files / f".{submission_id}-{uuid.uuid4().hex}"
                scratch.mkdir()
                try:
                    archive = self.challenge.write_archive(submission_id, scratch / "upload")
                    root = extract_archive(archive, scratch / "files", self.limits)
                    root.rename(target)
                finally:
                    shutil.rmtree(scratch, ignore_errors=True)
        return file_inside(target, image_name(caption_id, 0))


def clear_stale_uploads(uploads: Path) -> None:
    """Remove what dead server processes of this host left half-received (never accepted): several servers may
    share one challenge folder, so a live one's folder is left alone."""
    host = socket.gethostname()
    for folder in uploads.iterdir() if uploads.is_dir() else []:
        name, _, pid = folder.name.rpartition("-")
        if name != host or not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
            alive = int(pid) != os.getpid()  # our own pid: a previous server that had it is gone
        except ProcessLookupError:
            alive = False
        except PermissionError:
            alive = True
        if not alive:
            shutil.rmtree(folder, ignore_errors=True)


def _number(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def create_app(challenge: Challenge, folder: str | Path) -> FastAPI:
    """The FastAPI application of one challenge; `folder` holds its scratch space (uploads, jury images)."""
    server = Server(challenge, Path(folder))
    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        shutil.rmtree(server.uploads, ignore_errors=True)

    app = FastAPI(title=challenge.config.title, version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Upload submission sets, follow their scoring, read the leaderboards; a jury for the finalists.")
    app.state.server = server
    install_refusals(app, challenge)

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Response:
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    def team_of(request: Request, authorization: str | None) -> Account:
        team = challenge.authenticate("team", bearer_token(authorization))
        if team is None:
            raise Refused(401, "a valid team token is needed: Authorization: Bearer fgt_...")
        request.state.account = team  # who a later refusal of this request is counted against
        return team

    submission_id_path = PathParam(..., ge=1, le=MAX_ID, description="a submission's id")

    # ---------------------------------------------------------------- public API

    @app.get("/api/challenge", summary="The challenge's settings and phase")
    def api_challenge() -> dict[str, Any]:
        config = challenge.config
        start, end = challenge.phase()
        return {"title": config.title, "resolution": config.resolution, "per_caption": config.per_caption,
                "daily_limit": config.daily_limit, "metric": config.metric, "metric_description": METRICS[config.metric][1],
                "higher_is_better": config.higher_is_better, "phase_start": format_time(start), "phase_end": format_time(end),
                "closed": challenge.phase_closed(), "captions": len(server.captions),
                "max_upload_bytes": server.limits.max_upload_bytes}

    @app.get("/api/captions", summary="The captions to generate for, as JSONL ({id, caption, attributes})",
             response_class=NDJSONResponse)
    def api_captions() -> NDJSONResponse:
        return NDJSONResponse("".join(json.dumps({"id": c.id, "caption": c.caption, "attributes": c.attributes}) + "\n"
                                      for c in server.captions))

    @app.get("/api/leaderboard", summary="Each team's best public score, best first")
    def api_leaderboard() -> Any:
        return {"metric": challenge.config.metric, "half": "public", "rows": challenge.leaderboard("public")}

    @app.get("/api/leaderboard/private", summary="The private leaderboard (once the phase has closed)", responses=responses(403))
    def api_private() -> Any:
        return {"metric": challenge.config.metric, "half": "private", "rows": challenge.leaderboard("private")}

    # ---------------------------------------------------------------- a team's submissions

    @app.post("/api/submissions", status_code=202, summary="Upload a submission archive (zip or tar) as the request body",
              responses=responses(400, 401, 403, 413, 429, 507))
    async def api_upload(request: Request, name: str = Query("submission.zip", max_length=200),
                         authorization: str | None = Header(None)) -> Any:
        check_name(name)
        team = await run_in_threadpool(team_of, request, authorization)
        await run_in_threadpool(challenge.check_may_upload, team)
        limit = server.limits.max_upload_bytes
        work = server.uploads / uuid.uuid4().hex
        try:
            declared = request.headers.get("content-length")
            if declared and declared.isascii() and declared.isdigit() and int(declared) > limit:
                raise UploadTooLarge(f"the upload is {int(declared)} bytes; the limit is {limit} bytes")
            work.mkdir()
            size, sha256 = await receive_upload_async(request.stream(), work / "upload", limit)
            count = await run_in_threadpool(server.check_archive, work / "upload", work / "files")
            submission_id = await run_in_threadpool(challenge.accept, team, work / "upload", name, size, sha256, count)
        except OSError as error:  # the server's own disk, not the upload's fault; its paths stay in the log
            problem = disk_problem(error, work) or error.strerror or type(error).__name__
            logger.error("cannot store an upload of team %s: %s", team.name, error)
            await run_in_threadpool(challenge.log_event, "server", "upload.storage_error", team=team.name, problem=problem)
            raise Refused(507, f"the server cannot store uploads right now ({problem}); try again later") from None
        except ArchiveError as error:
            raise Refused(413 if isinstance(error, UploadTooLarge) else 400, f"{name}: {error}") from None
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return {"id": submission_id, "status": "queued", "bytes": size, "sha256": sha256, "images": count}

    @app.get("/api/submissions", summary="The team's own submissions with their status and public scores",
             responses=responses(401))
    def api_submissions(request: Request, authorization: str | None = Header(None)) -> Any:
        return {"team": (team := team_of(request, authorization)).name, "submissions": challenge.submissions(team)}

    @app.get("/api/submissions/{submission_id}", summary="One of the team's own submissions", responses=responses(401, 404))
    def api_submission(request: Request, submission_id: int = submission_id_path,
                       authorization: str | None = Header(None)) -> Any:
        team = team_of(request, authorization)
        for entry in challenge.submissions(team):
            if entry["id"] == submission_id:
                return entry
        raise Refused(404, f"team {team.name} has no submission {submission_id}")

    @app.delete("/api/submissions/{submission_id}", responses=responses(401, 403, 404),
                summary="Hide one of the team's submissions (it still counts toward its day's limit); refused once the "
                        "phase has closed")
    def api_delete(request: Request, submission_id: int = submission_id_path,
                   authorization: str | None = Header(None)) -> Any:
        challenge.delete_submission(team_of(request, authorization), submission_id)
        return {"id": submission_id, "deleted": True}

    add_pages(app, server)
    return app
