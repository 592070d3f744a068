"""The jury's pages: a juror's next ballot, the vote on it, and the two finalists' images it shows.

A refused vote is answered with the message page shown to the juror, and audited like any other refusal.
"""

from __future__ import annotations

from fastapi import APIRouter, Form, Path as PathParam, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from ..refusals import MAX_ID, FormRefused, same_secret
from ..store import Refused
from .deps import JurorSession, ServerState, VotingJuror
from .sessions import login_page

router = APIRouter(include_in_schema=False)


@router.get("/jury", response_class=HTMLResponse)
def page_jury(request: Request, server: ServerState, session: JurorSession) -> HTMLResponse:
    if session is None:
        return login_page(server, request, "juror")
    juror, csrf = session
    challenge = server.challenge
    if len(challenge.finalists()) < 2:
        return server.page("message.html", message="The jury has no finalists yet.", juror=juror.name, csrf=csrf)
    drawn = server.draw_ballot(juror)
    if drawn is None:
        return server.page("message.html", message=f"Thank you, {juror.name}: you have voted on every comparison.",
                           juror=juror.name, csrf=csrf)
    ballot = challenge.ballot(juror, drawn["ballot"])
    return server.page("jury.html", juror=juror.name, csrf=csrf, ballot=ballot)


@router.post("/jury/vote")
def jury_vote(server: ServerState, session: VotingJuror, ballot: int = Form(..., ge=1, le=MAX_ID),
              choice: str = Form(..., max_length=10), csrf: str = Form(..., max_length=100)) -> Response:
    juror, expected = session
    if not same_secret(csrf, expected):
        raise FormRefused(403, "The form expired or came from another site; reload the page.",
                          action="jury.csrf_refused")
    server.challenge.vote(juror, ballot, choice)
    return RedirectResponse("/jury", status_code=303)


@router.get("/jury/image/{ballot_id}/{side}")
async def jury_image(server: ServerState, session: JurorSession, ballot_id: int = PathParam(..., ge=1, le=MAX_ID),
                     side: str = PathParam(...)) -> Response:
    path = None if session is None else await run_in_threadpool(server.ballot_image, session[0], ballot_id, side)
    if path is None:
        raise Refused(404, "jury image not found")
    return FileResponse(path, media_type="image/png")
