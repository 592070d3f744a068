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

The routes live in api/, a router per concern (public.py, submissions.py, sessions.py, pages.py, jury.py), with
dependencies for the server's state and the current team or juror (deps.py); every refusal is answered by the one
handler of refusals.py. This module puts them together.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from .api import jury, pages, public, sessions, submissions
from .api.state import Server, clear_stale_uploads
from .refusals import SECURITY_HEADERS, install_refusals
from .store import Challenge

__all__ = ["Server", "clear_stale_uploads", "create_app"]
ROUTERS = (public.router, submissions.router, sessions.router, pages.router, jury.router)


async def security_headers(request: Request, call_next: Any) -> Response:
    """Every answer carries the security headers (a refusal's JSON has them already)."""
    response = await call_next(request)
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def create_app(challenge: Challenge, folder: str | Path) -> FastAPI:
    """The FastAPI application of one challenge; `folder` holds its scratch space (uploads, jury images)."""
    server = Server(challenge, Path(folder))

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        shutil.rmtree(server.uploads, ignore_errors=True)

    app = FastAPI(title=challenge.config.title, version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Upload submission sets, follow their scoring, read the leaderboards; a jury for the finalists.")
    app.state.server = server  # what the routes' dependencies find (api/deps.py)
    install_refusals(app, challenge, server.message_page)
    app.middleware("http")(security_headers)
    for router in ROUTERS:
        app.include_router(router)
    return app
