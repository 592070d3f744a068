"""The challenge's HTML pages (none of them in the OpenAPI schema): the leaderboards, the stylesheet and the team
page. Logins are sessions.py's, the jury's ballots jury.py's."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse

from ..store import PRIVATE_NOT_OPEN
from .deps import ServerState, TeamSession
from .sessions import login_page

router = APIRouter(include_in_schema=False)
STYLESHEET = Path(__file__).parent.parent / "templates" / "style.css"


@router.get("/", response_class=HTMLResponse)
def page_leaderboard(server: ServerState) -> HTMLResponse:
    return server.page("leaderboard.html", half="public", rows=server.challenge.leaderboard("public"))


@router.get("/leaderboard/private", response_class=HTMLResponse)
def page_private(server: ServerState) -> HTMLResponse:
    if not server.challenge.phase_closed():  # a page that is not open yet: not a refused request, not audited
        return server.page("message.html", status=403, message=PRIVATE_NOT_OPEN)
    return server.page("leaderboard.html", half="private", rows=server.challenge.leaderboard("private"))


@router.get("/style.css")
def stylesheet() -> FileResponse:
    return FileResponse(STYLESHEET, media_type="text/css")


@router.get("/team", response_class=HTMLResponse)
def page_team(request: Request, server: ServerState, session: TeamSession) -> HTMLResponse:
    if session is None:
        return login_page(server, request, "team")
    team, csrf = session
    challenge = server.challenge
    return server.page("team.html", team=team.name, csrf=csrf, submissions=challenge.submissions(team),
                       used=challenge.uploads_today(team), limit=challenge.config.daily_limit)
