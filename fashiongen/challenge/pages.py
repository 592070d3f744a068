"""The challenge's HTML pages: the leaderboards, the team page and the jury's ballots, with their login forms.

Every form carries a CSRF token: a logged-in form the session's own, a login form a pre-session token that is also
set as an HttpOnly, SameSite=Strict cookie (double submit), so another site cannot log a visitor into its account.
A refused form is audited like any other refusal (refusals.record).
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI, Form, Path as PathParam, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from .archive import ArchiveError
from .refusals import COOKIES, MAX_ID, record, same_secret
from .store import Account, Refused

if TYPE_CHECKING:
    from .server import Server

LOGIN_COOKIE = "fg_login"  # the pre-session CSRF token of the login forms
HOME = {"team": "/team", "juror": "/jury"}


def add_pages(app: FastAPI, server: Server) -> None:
    """The pages' routes on `app` (none of them in the OpenAPI schema)."""
    challenge = server.challenge

    def refused(request: Request, status: int, message: str, account: Account | None = None, csrf: str = "",
                action: str | None = None) -> HTMLResponse:
        request.state.account = account
        record(challenge, request, Refused(status, message), action)
        return server.page("message.html", status=status, message=message, juror=account.name if account else "",
                           csrf=csrf if account and account.kind == "juror" else "")

    def login_page(request: Request, kind: str, status: int = 200, error: str = "") -> HTMLResponse:
        token = request.cookies.get(LOGIN_COOKIE) or ""
        if not 20 <= len(token) <= 100 or not token.isascii():
            token = secrets.token_urlsafe(32)
        response = server.page("login.html", status=status, kind=kind, action=HOME[kind] + "/login", error=error,
                               login_csrf=token)
        response.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="strict", max_age=3600)
        return response

    def logged_in(request: Request, kind: str) -> tuple[Account, str] | None:
        return challenge.session(kind, request.cookies.get(COOKIES[kind]))

    def login(request: Request, kind: str, token: str, csrf: str) -> Response:
        expected = request.cookies.get(LOGIN_COOKIE) or ""
        if not expected or not same_secret(csrf, expected):
            return refused(request, 403, "The login form expired or came from another site; reload the page and log in again.",
                           action=f"{kind}.login_csrf_refused")
        account = challenge.authenticate(kind, token.strip())
        if account is None:
            challenge.log_event("anonymous", f"{kind}.login_failed")
            return login_page(request, kind, status=401, error="That token is not valid.")
        secret, _ = challenge.create_session(account)
        response = RedirectResponse(HOME[kind], status_code=303)
        response.set_cookie(COOKIES[kind], secret, httponly=True, samesite="strict", max_age=3600 * challenge.config.session_hours)
        response.delete_cookie(LOGIN_COOKIE)
        return response

    def logout(request: Request, kind: str, csrf: str) -> Response:
        session = logged_in(request, kind)
        if session is None or not same_secret(csrf, session[1]):
            return refused(request, 403, "The form expired; reload the page.")
        challenge.end_session(request.cookies[COOKIES[kind]])
        response = RedirectResponse(HOME[kind], status_code=303)
        response.delete_cookie(COOKIES[kind])
        return response

    def login_routes(kind: str) -> None:
        @app.post(f"{HOME[kind]}/login", include_in_schema=False)
        def login_form(request: Request, token: str = Form(..., max_length=200), csrf: str = Form("", max_length=100)) -> Response:
            return login(request, kind, token, csrf)

        @app.post(f"{HOME[kind]}/logout", include_in_schema=False)
        def logout_form(request: Request, csrf: str = Form(..., max_length=100)) -> Response:
            return logout(request, kind, csrf)

    login_routes("team")
    login_routes("juror")

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

    @app.get("/team", response_class=HTMLResponse, include_in_schema=False)
    def page_team(request: Request) -> HTMLResponse:
        session = logged_in(request, "team")
        if session is None:
            return login_page(request, "team")
        team, csrf = session
        with challenge.db.transaction(write=False) as tx:
            used = challenge.used_today(tx, team.id)
        return server.page("team.html", team=team.name, csrf=csrf, submissions=challenge.submissions(team), used=used,
                           limit=challenge.config.daily_limit)

    @app.get("/jury", response_class=HTMLResponse, include_in_schema=False)
    def page_jury(request: Request) -> HTMLResponse:
        session = logged_in(request, "juror")
        if session is None:
            return login_page(request, "juror")
        juror, csrf = session
        if len(challenge.finalists()) < 2:
            return server.page("message.html", message="The jury has no finalists yet.", juror=juror.name, csrf=csrf)
        with server.jury_lock:
            drawn = challenge.next_ballot(juror, server.rng)
        if drawn is None:
            return server.page("message.html", message=f"Thank you, {juror.name}: you have voted on every comparison.",
                               juror=juror.name, csrf=csrf)
        ballot = challenge.ballot(juror, drawn["ballot"])
        return server.page("jury.html", juror=juror.name, csrf=csrf, ballot=ballot)

    @app.post("/jury/vote", include_in_schema=False)
    def jury_vote(request: Request, ballot: int = Form(..., ge=1, le=MAX_ID), choice: str = Form(..., max_length=10),
                  csrf: str = Form(..., max_length=100)) -> Response:
        session = logged_in(request, "juror")
        if session is None:
            return refused(request, 401, "Log in as a juror first.")
        juror, expected = session
        if not same_secret(csrf, expected):
            return refused(request, 403, "The form expired or came from another site; reload the page.", juror, expected,
                           action="jury.csrf_refused")
        try:
            challenge.vote(juror, ballot, choice)
        except Refused as error:
            return refused(request, error.status, str(error), juror, expected)
        return RedirectResponse("/jury", status_code=303)

    @app.get("/jury/image/{ballot_id}/{side}", include_in_schema=False)
    async def jury_image(request: Request, ballot_id: int = PathParam(..., ge=1, le=MAX_ID), side: str = PathParam(...)) -> Response:
        session = await run_in_threadpool(logged_in, request, "juror")
        try:
            if session is None or side not in ("left", "right"):
                raise Refused(404, "jury image not found")
            ballot = await run_in_threadpool(challenge.ballot, session[0], ballot_id)
            path = await run_in_threadpool(server.jury_image, ballot[side]["submission"], ballot["caption_id"])
        except (Refused, ArchiveError, ValueError):
            raise Refused(404, "jury image not found") from None
        if not path.is_file():
            raise Refused(404, "jury image not found")
        return FileResponse(path, media_type="image/png")
