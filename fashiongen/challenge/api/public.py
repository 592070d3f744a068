"""The public API: the challenge's settings and phase, the captions to generate for, and the leaderboards."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from ..config import METRICS, format_time
from ..refusals import responses
from .deps import ServerState

router = APIRouter()


class NDJSONResponse(PlainTextResponse):
    media_type = "application/x-ndjson"


@router.get("/api/challenge", summary="The challenge's settings and phase")
def api_challenge(server: ServerState) -> dict[str, Any]:
    challenge = server.challenge
    config = challenge.config
    start, end = challenge.phase()
    return {"title": config.title, "resolution": config.resolution, "per_caption": config.per_caption,
            "daily_limit": config.daily_limit, "metric": config.metric, "metric_description": METRICS[config.metric][1],
            "higher_is_better": config.higher_is_better, "phase_start": format_time(start), "phase_end": format_time(end),
            "closed": challenge.phase_closed(), "captions": len(server.captions),
            "max_upload_bytes": server.limits.max_upload_bytes}


@router.get("/api/captions", summary="The captions to generate for, as JSONL ({id, caption, attributes})",
            response_class=NDJSONResponse)
def api_captions(server: ServerState) -> NDJSONResponse:
    return NDJSONResponse("".join(json.dumps({"id": c.id, "caption": c.caption, "attributes": c.attributes}) + "\n"
                                  for c in server.captions))


@router.get("/api/leaderboard", summary="Each team's best public score, best first")
def api_leaderboard(server: ServerState) -> Any:
    return {"metric": server.challenge.config.metric, "half": "public", "rows": server.challenge.leaderboard("public")}


@router.get("/api/leaderboard/private", summary="The private leaderboard (once the phase has closed)", responses=responses(403))
def api_private(server: ServerState) -> Any:
    return {"metric": server.challenge.config.metric, "half": "private", "rows": server.challenge.leaderboard("private")}
