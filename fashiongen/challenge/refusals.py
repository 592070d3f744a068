"""Every refusal of the challenge server goes through here: one sentence as JSON `{"detail": ...}`, a 4xx status,
the security headers, an audit entry, and (for a known team) a count toward its refused-requests limit.

    install_refusals(app, challenge, server.message_page)   # Refused, bad parameters, unknown routes, the unexpected
    raise Refused(404, "team a has no submission 7")        # from any endpoint or dependency

One handler answers every `Refused`: as JSON, or, when a page's form sent the request (its dependency set
`request.state.page` to a MessagePage), as the message page shown to the account that sent it.

Request values are checked here before they reach the database: ids must fit a 64-bit integer (SQLite and
PostgreSQL both overflow past 2^63-1) and names must hold no NUL or control character (PostgreSQL refuses NUL).
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from .store import Account, Challenge, Refused

logger = logging.getLogger(__name__)

MAX_ID = 2**63 - 1  # the largest id either database holds
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; style-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
COOKIES = {"team": "fg_team", "juror": "fg_jury"}
NOT_COUNTED = {401, 429}  # no team to count, or the limiter's own answer (counting it would extend the wait forever)
STATUS_SENTENCES = {404: "not found: there is no such page or endpoint", 405: "this endpoint does not take that method"}


class FormRefused(Refused):
    """A refused form whose audit entry has an action of its own (a login's or a ballot's CSRF check)."""

    def __init__(self, status: int, message: str, action: str) -> None:
        super().__init__(status, message)
        self.action = action


@dataclass(frozen=True)
class MessagePage:
    """Set as `request.state.page` by a page's form: its refusals are answered with the message page shown to
    `account` (with the session's `csrf` for a juror's logout button) instead of JSON."""

    account: Account | None = None
    csrf: str = ""


def refusal_response(error: Refused) -> JSONResponse:
    headers = dict(SECURITY_HEADERS)
    if error.retry_after:
        headers["Retry-After"] = str(error.retry_after)
    return JSONResponse({"detail": str(error)}, status_code=error.status, headers=headers)


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses=` of a route that may refuse with these statuses."""
    described = {400: "not a valid archive or submission", 401: "no valid team token", 403: "the phase is not open",
                 404: "no such submission of this team", 413: "over the upload cap", 422: "a malformed request",
                 429: "the daily limit or too many refusals (Retry-After)", 507: "the server cannot store uploads now"}
    schema = {"type": "object", "properties": {"detail": {"type": "string"}}, "required": ["detail"]}
    return {status: {"description": described[status], "content": {"application/json": {"schema": schema}}}
            for status in sorted({*statuses, 422})}


def check_name(name: str, what: str = "name") -> str:
    """`name` when it holds no NUL or other control character; Refused(422) naming the field if it does."""
    if any(ord(char) < 32 or 127 <= ord(char) < 160 or 0xD800 <= ord(char) < 0xE000 for char in name):
        raise Refused(422, f"{what}: control characters (such as NUL) are not allowed")
    return name


def same_secret(given: str, expected: str) -> bool:
    """Constant-time comparison of two form or cookie values, whatever characters the request sent."""
    return secrets.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8", "replace"))


def bearer_token(authorization: str | None) -> str | None:
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def account_of(challenge: Challenge, request: Request) -> Account | None:
    """Who sent a request: the team or juror the endpoint found, else its bearer token's team or a session's owner."""
    known = getattr(request.state, "account", None)
    if known is not None:
        return known
    team = challenge.authenticate("team", bearer_token(request.headers.get("authorization")))
    if team is not None:
        return team
    for kind, cookie in COOKIES.items():
        session = challenge.session(kind, request.cookies.get(cookie))
        if session is not None:
            return session[0]
    return None


def _sentence(error: RequestValidationError) -> str:
    """A request's first invalid field and what is wrong with it, in one sentence."""
    first = (error.errors() or [{}])[0]
    field = next((str(part) for part in reversed(first.get("loc", ())) if isinstance(part, str)), "request")
    message = str(first.get("msg", "is not valid")).split("\n")[0]
    return f"{field}: {message[:1].lower()}{message[1:]}"


def record(challenge: Challenge, request: Request, error: Refused) -> None:
    """Audit a refusal (as a FormRefused's action, else upload.refused or request.refused), and count it toward the
    team's refused-requests limit."""
    try:
        account = account_of(challenge, request)
        uploading = request.method == "POST" and request.url.path == "/api/submissions"
        action = getattr(error, "action", None) or ("upload.refused" if uploading else "request.refused")
        challenge.record_refusal(account, str(error), action=action,
                                 counted=error.status not in NOT_COUNTED and error.status < 500, status=error.status,
                                 request=f"{request.method} {request.url.path}"[:200])
    except Exception as problem:  # a refusal is still answered when the database cannot take its audit entry
        logger.error("cannot audit a refusal (%s): %s", error, type(problem).__name__)


def install_refusals(app: FastAPI, challenge: Challenge,
                     message_page: Callable[[MessagePage, Refused], Response]) -> None:
    """The app's exception handlers: each answer is a refusal, audited by `record`; JSON through `refusal_response`,
    except a page form's refusals (`request.state.page`), which `message_page` renders."""

    async def refuse(request: Request, error: Refused) -> JSONResponse:
        await run_in_threadpool(record, challenge, request, error)
        return refusal_response(error)

    @app.exception_handler(Refused)
    async def refused(request: Request, error: Refused) -> Response:  # the one handler of our own refusals
        shown = getattr(request.state, "page", None)
        if shown is None:
            return await refuse(request, error)
        if shown.account is not None:
            request.state.account = shown.account  # who the refusal is counted against
        await run_in_threadpool(record, challenge, request, error)
        return message_page(shown, error)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        return await refuse(request, Refused(422, _sentence(error)))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        text = STATUS_SENTENCES.get(error.status_code, str(error.detail))
        return await refuse(request, Refused(error.status_code, text))

    @app.exception_handler(ClientDisconnect)
    async def disconnected(request: Request, _: ClientDisconnect) -> JSONResponse:
        return await refuse(request, Refused(400, "the request body stopped before its end (the connection closed, or "
                                                  "sent too slowly)"))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:  # the one catch-all: a bug of ours
        logger.exception("unexpected error answering %s %s", request.method, request.url.path)
        with contextlib.suppress(Exception):
            await run_in_threadpool(challenge.log_event, "server", "request.error", error=type(error).__name__,
                                    request=f"{request.method} {request.url.path}"[:200])
        return refusal_response(Refused(500, "the server failed to answer this request; the organisers can see why "
                                             "in its log"))
