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
from fastapi import FastAPI, Form, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape

from ..submission import CaptionItem, image_name
from ..utils import disk_problem, file_inside, first_line
from .archive import ArchiveError, UploadTooLarge, extract_archive, receive_upload_async
from .config import METRICS, format_time
from .layout import archive_limits, layout_problems, summary
from .store import Account, Challenge, Refused

logger = logging.getLogger(__name__)

COOKIES = {"team": "fg_team", "juror": "fg_jury"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; style-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _refusal(error: Refused) -> JSONResponse:
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after else None
    return JSONResponse({"detail": str(error)}, status_code=error.status, headers=headers)


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
        self._jury_lock = threading.Lock()
        self.rng = np.random.default_rng(secrets.randbits(64))

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
        root = extract_archive(archive, scratch, archive_limits(self.challenge.config, len(self.captions)))
        problems = layout_problems(root, self.captions, self.challenge.config)
        if problems:
            raise Refused(400, f"not a valid submission: {summary(problems)}")
        return len(self.captions) * self.challenge.config.per_caption

    # ---------------------------------------------------------------- jury images

    def jury_image(self, submission_id: int, caption_id: str) -> Path:
        """A finalist's image of a caption, from its archive extracted once into the folder's jury/ space."""
        target = self.jury_files / str(submission_id)
        with self._jury_lock:
            if not target.is_dir():
                self.jury_files.mkdir(parents=True, exist_ok=True)
                scratch = self.jury_files / f".{submission_id}-{uuid.uuid4().hex}"
                scratch.mkdir()
                try:
                    archive = self.challenge.write_archive(submission_id, scratch / "upload")
                    root = extract_archive(archive, scratch / "files", archive_limits(self.challenge.config, len(self.captions)))
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


def _bearer(authorization: str | None) -> str | None:
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


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

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Response:
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    def team_of(authorization: str | None) -> Account:
        team = challenge.authenticate("team", _bearer(authorization))
        if team is None:
            raise Refused(401, "a valid team token is needed: Authorization: Bearer fgt_...")
        return team

    # ---------------------------------------------------------------- public API

    @app.get("/api/challenge", summary="The challenge's settings and phase")
    def api_challenge() -> dict[str, Any]:
        config = challenge.config
        start, end = challenge.phase()
        return {"title": config.title, "resolution": config.resolution, "per_caption": config.per_caption,
                "daily_limit": config.daily_limit, "metric": config.metric, "metric_description": METRICS[config.metric][1],
                "higher_is_better": config.higher_is_better, "phase_start": format_time(start), "phase_end": format_time(end),
                "closed": challenge.phase_closed(), "captions": len(server.captions), "max_upload_mb": config.max_upload_mb}

    @app.get("/api/captions", summary="The captions to generate for, as JSONL ({id, caption, attributes})",
             response_class=PlainTextResponse)
    def api_captions() -> PlainTextResponse:
        text = "".join(json.dumps({"id": c.id, "caption": c.caption, "attributes": c.attributes}) + "\n" for c in server.captions)
        return PlainTextResponse(text, media_type="application/x-ndjson")

    @app.get("/api/leaderboard", summary="Each team's best public score, best first")
    def api_leaderboard() -> Any:
        return {"metric": challenge.config.metric, "half": "public", "rows": challenge.leaderboard("public")}

    @app.get("/api/leaderboard/private", summary="The private leaderboard (once the phase has closed)")
    def api_private() -> Any:
        try:
            return {"metric": challenge.config.metric, "half": "private", "rows": challenge.leaderboard("private")}
        except Refused as error:
            return _refusal(error)

    # ---------------------------------------------------------------- a team's submissions

    @app.post("/api/submissions", status_code=202, summary="Upload a submission archive (zip or tar) as the request body")
    async def api_upload(request: Request, name: str = Query("submission.zip", max_length=200),
                         authorization: str | None = Header(None)) -> Any:
        try:
            team = await run_in_threadpool(team_of, authorization)
            await run_in_threadpool(challenge.check_may_upload, team)
        except Refused as error:
            return _refusal(error)
        limit = challenge.config.max_upload_mb * 2**20
        work = server.uploads / uuid.uuid4().hex
        try:
            declared = request.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > limit:
                raise UploadTooLarge(f"the upload is {int(declared)} bytes; the limit is {limit} bytes")
            work.mkdir()
            size, sha256 = await receive_upload_async(request.stream(), work / "upload", limit)
            count = await run_in_threadpool(server.check_archive, work / "upload", work / "files")
            submission_id = await run_in_threadpool(challenge.accept, team, work / "upload", name, size, sha256, count)
        except OSError as error:  # the server's own disk, not the upload's fault
            problem = disk_problem(error, work) or first_line(error)
            logger.error("cannot store an upload of team %s: %s", team.name, problem)
            await run_in_threadpool(challenge.log_event, "server", "upload.storage_error", team=team.name, problem=problem)
            return _refusal(Refused(507, f"the server cannot store uploads right now ({problem}); try again later"))
        except (ArchiveError, Refused) as error:
            status = 413 if isinstance(error, UploadTooLarge) else getattr(error, "status", 400)
            message = str(error) if isinstance(error, Refused) else f"{name}: {error}"
            if status in (400, 413):
                await run_in_threadpool(challenge.record_refusal, team, message)
            return _refusal(Refused(status, message, getattr(error, "retry_after", None)))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return {"id": submission_id, "status": "queued", "bytes": size, "sha256": sha256, "images": count}

    @app.get("/api/submissions", summary="The team's own submissions with their status and public scores")
    def api_submissions(authorization: str | None = Header(None)) -> Any:
        try:
            return {"team": (team := team_of(authorization)).name, "submissions": challenge.submissions(team)}
        except Refused as error:
            return _refusal(error)

    @app.get("/api/submissions/{submission_id}", summary="One of the team's own submissions")
    def api_submission(submission_id: int, authorization: str | None = Header(None)) -> Any:
        try:
            team = team_of(authorization)
            for entry in challenge.submissions(team):
                if entry["id"] == submission_id:
                    return entry
            raise Refused(404, f"team {team.name} has no submission {submission_id}")
        except Refused as error:
            return _refusal(error)

    @app.delete("/api/submissions/{submission_id}", summary="Hide one of the team's submissions (it still counts toward its day's limit)")
    def api_delete(submission_id: int, authorization: str | None = Header(None)) -> Any:
        try:
            challenge.delete_submission(team_of(authorization), submission_id)
        except Refused as error:
            return _refusal(error)
        return {"id": submission_id, "deleted": True}

    # ---------------------------------------------------------------- pages

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page_leaderboard() -> HTMLResponse:
        return server.page("leaderboard.html", half="public", rows=challenge.leaderboard("public"))

    @app.get("/leaderboard/private", response_class=HTMLResponse, include_in_schema=False)
    def page_private() -> HTMLResponse:
        try:
            rows = challenge.leaderboard("private")
        except Refused as error:
            return server.page("message.html", status=error.status, message=str(error))
        return server.page("leaderboard.html", half="private", rows=rows)

    @app.get("/style.css", include_in_schema=False)
    def stylesheet() -> FileResponse:
        return FileResponse(Path(__file__).parent / "templates" / "style.css", media_type="text/css")

    def logged_in(request: Request, kind: str) -> tuple[Account, str] | None:
        return challenge.session(kind, request.cookies.get(COOKIES[kind]))

    def login(kind: str, token: str) -> Response:
        account = challenge.authenticate(kind, token.strip())
        page = "/team" if kind == "team" else "/jury"
        if account is None:
            challenge.log_event("anonymous", f"{kind}.login_failed")
            return server.page("login.html", status=401, kind=kind, action=page + "/login", error="That token is not valid.")
        secret, _ = challenge.create_session(account)
        response = RedirectResponse(page, status_code=303)
        response.set_cookie(COOKIES[kind], secret, httponly=True, samesite="strict", max_age=3600 * challenge.config.session_hours)
        return response

    def logout(request: Request, kind: str, csrf: str) -> Response:
        session = logged_in(request, kind)
        if session is None or not secrets.compare_digest(csrf, session[1]):
            return server.page("message.html", status=403, message="The form expired; reload the page.")
        challenge.end_session(request.cookies[COOKIES[kind]])
        response = RedirectResponse("/team" if kind == "team" else "/jury", status_code=303)
        response.delete_cookie(COOKIES[kind])
        return response

    def login_routes(kind: str, prefix: str) -> None:
        @app.post(f"{prefix}/login", include_in_schema=False)
        def login_form(token: str = Form(..., max_length=200)) -> Response:
            return login(kind, token)

        @app.post(f"{prefix}/logout", include_in_schema=False)
        def logout_form(request: Request, csrf: str = Form(..., max_length=100)) -> Response:
            return logout(request, kind, csrf)

    login_routes("team", "/team")
    login_routes("juror", "/jury")

    @app.get("/team", response_class=HTMLResponse, include_in_schema=False)
    def page_team(request: Request) -> HTMLResponse:
        session = logged_in(request, "team")
        if session is None:
            return server.page("login.html", kind="team", action="/team/login")
        team, csrf = session
        with challenge.db.transaction(write=False) as tx:
            used = challenge.used_today(tx, team.id)
        return server.page("team.html", team=team.name, csrf=csrf, submissions=challenge.submissions(team), used=used,
                           limit=challenge.config.daily_limit)

    @app.get("/jury", response_class=HTMLResponse, include_in_schema=False)
    def page_jury(request: Request) -> HTMLResponse:
        session = logged_in(request, "juror")
        if session is None:
            return server.page("login.html", kind="juror", action="/jury/login")
        juror, csrf = session
        if len(challenge.finalists()) < 2:
            return server.page("message.html", message="The jury has no finalists yet.", juror=juror.name, csrf=csrf)
        with server._jury_lock:
            drawn = challenge.next_ballot(juror, server.rng)
        if drawn is None:
            return server.page("message.html", message=f"Thank you, {juror.name}: you have voted on every comparison.",
                               juror=juror.name, csrf=csrf)
        ballot = challenge.ballot(juror, drawn["ballot"])
        return server.page("jury.html", juror=juror.name, csrf=csrf, ballot=ballot)

    @app.post("/jury/vote", include_in_schema=False)
    def jury_vote(request: Request, ballot: int = Form(...), choice: str = Form(..., max_length=10),
                  csrf: str = Form(..., max_length=100)) -> Response:
        session = logged_in(request, "juror")
        if session is None:
            return server.page("message.html", status=401, message="Log in as a juror first.")
        juror, expected = session
        if not secrets.compare_digest(csrf, expected):
            challenge.log_event(juror.name, "jury.csrf_refused", ballot=ballot)
            return server.page("message.html", status=403, message="The form expired or came from another site; reload the page.")
        try:
            challenge.vote(juror, ballot, choice)
        except Refused as error:
            return server.page("message.html", status=error.status, message=str(error), juror=juror.name, csrf=expected)
        return RedirectResponse("/jury", status_code=303)

    @app.get("/jury/image/{ballot_id}/{side}", include_in_schema=False)
    def jury_image(request: Request, ballot_id: int, side: str) -> Response:
        session = logged_in(request, "juror")
        if session is None or side not in ("left", "right"):
            return PlainTextResponse("not found", status_code=404)
        try:
            ballot = challenge.ballot(session[0], ballot_id)
            path = server.jury_image(ballot[side]["submission"], ballot["caption_id"])
        except (Refused, ArchiveError, ValueError):
            return PlainTextResponse("not found", status_code=404)
        return FileResponse(path, media_type="image/png") if path.is_file() else PlainTextResponse("not found", status_code=404)

    return app
