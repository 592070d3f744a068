"""The dependencies the routes share: the server's state, the team a bearer token authenticates (once per request),
the logged-in team or juror of a page's session cookie, and a submission's id as a path parameter.

    @router.get("/api/submissions")
    def api_submissions(team: CurrentTeam, server: ServerState) -> Any: ...

A dependency runs before the route's own parameters are checked: a request without a valid token is refused 401
whatever else is wrong with it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Path as PathParam, Request

from ..refusals import COOKIES, MAX_ID, MessagePage, bearer_token
from ..store import Account, Refused
from .state import Server

Session = tuple[Account, str]  # (the logged-in account, its session's CSRF token)


def server_of(request: Request) -> Server:
    return request.app.state.server


ServerState = Annotated[Server, Depends(server_of)]


def current_team(request: Request, server: ServerState, authorization: str | None = Header(None)) -> Account:
    """The team of the request's `Authorization: Bearer fgt_...` token; Refused(401) without a valid one."""
    team = server.challenge.authenticate("team", bearer_token(authorization))
    if team is None:
        raise Refused(401, "a valid team token is needed: Authorization: Bearer fgt_...")
    request.state.account = team  # who a later refusal of this request is counted against
    return team


CurrentTeam = Annotated[Account, Depends(current_team)]


def team_session(request: Request, server: ServerState) -> Session | None:
    """The team logged in with the request's session cookie, and its CSRF token; None when none is."""
    return server.challenge.session("team", request.cookies.get(COOKIES["team"]))


def juror_session(request: Request, server: ServerState) -> Session | None:
    """The juror logged in with the request's session cookie, and its CSRF token; None when none is."""
    return server.challenge.session("juror", request.cookies.get(COOKIES["juror"]))


TeamSession = Annotated[Session | None, Depends(team_session)]
JurorSession = Annotated[Session | None, Depends(juror_session)]


def answered_as_page(request: Request) -> None:
    """This request comes from a page's form: its refusals are answered with the message page, not JSON."""
    request.state.page = MessagePage()


def voting_juror(request: Request, session: JurorSession) -> Session:
    """The logged-in juror of a ballot form and its session's CSRF token; the form's refusals are answered with the
    message page shown to this juror. Refused(401) when no juror is logged in."""
    if session is None:
        request.state.page = MessagePage()
        raise Refused(401, "Log in as a juror first.")
    request.state.page = MessagePage(*session)
    return session


VotingJuror = Annotated[Session, Depends(voting_juror)]
SubmissionId = Annotated[int, PathParam(ge=1, le=MAX_ID, description="a submission's id")]
