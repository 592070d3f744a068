"""Logging in and out of the team and jury pages: the login page and its form, and the logout form.

Every form carries a CSRF token: a logged-in form the session's own, a login form a pre-session token that is also
set as an HttpOnly, SameSite=Strict cookie (double submit), so another site cannot log a visitor into its account.
"""

from __future__ import annotations

import secrets

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ..refusals import COOKIES, FormRefused, same_secret
from ..store import Refused
from .deps import ServerState, answered_as_page
from .state import Server

LOGIN_COOKIE = "fg_login"  # the pre-session CSRF token of the login forms
HOME = {"team": "/team", "juror": "/jury"}

router = APIRouter(include_in_schema=False, dependencies=[Depends(answered_as_page)])


def login_page(server: Server, request: Request, kind: str, status: int = 200, error: str = "") -> HTMLResponse:
    """The login form of the team or jury page, with a fresh pre-session CSRF token unless the visitor has one."""
    token = request.cookies.get(LOGIN_COOKIE) or ""
    if not 20 <= len(token) <= 100 or not token.isascii():
        token = secrets.token_urlsafe(32)
    response = server.page("login.html", status=status, kind=kind, action=HOME[kind] + "/login", error=error,
                           login_csrf=token)
    response.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="strict", max_age=3600)
    return response


def login(server: Server, request: Request, kind: str, token: str, csrf: str) -> Response:
    expected = request.cookies.get(LOGIN_COOKIE) or ""
    if not expected or not same_secret(csrf, expected):
        raise FormRefused(403, "The login form expired or came from another site; reload the page and log in again.",
                          action=f"{kind}.login_csrf_refused")
    challenge = server.challenge
    account = challenge.authenticate(kind, token.strip())
    if account is None:
        challenge.log_event("anonymous", f"{kind}.login_failed")
        return login_page(server, request, kind, status=401, error="That token is not valid.")
    secret, _ = challenge.create_session(account)
    response = RedirectResponse(HOME[kind], status_code=303)
    response.set_cookie(COOKIES[kind], secret, httponly=True, samesite="strict",
                        max_age=3600 * challenge.config.session_hours)
    response.delete_cookie(LOGIN_COOKIE)
    return response


def logout(server: Server, request: Request, kind: str, csrf: str) -> Response:
    session = server.challenge.session(kind, request.cookies.get(COOKIES[kind]))
    if session is None or not same_secret(csrf, session[1]):
        raise Refused(403, "The form expired; reload the page.")
    server.challenge.end_session(request.cookies[COOKIES[kind]])
    response = RedirectResponse(HOME[kind], status_code=303)
    response.delete_cookie(COOKIES[kind])
    return response


def add_session_routes(kind: str) -> None:
    """POST /team/login and /team/logout (or /jury/...): the forms of one kind of account."""

    @router.post(f"{HOME[kind]}/login")
    def login_form(request: Request, server: ServerState, token: str = Form(..., max_length=200),
                   csrf: str = Form("", max_length=100)) -> Response:
        return login(server, request, kind, token, csrf)

    @router.post(f"{HOME[kind]}/logout")
    def logout_form(request: Request, server: ServerState, csrf: str = Form(..., max_length=100)) -> Response:
        return logout(server, request, kind, csrf)


add_session_routes("team")
add_session_routes("juror")
