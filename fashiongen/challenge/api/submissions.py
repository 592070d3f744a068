"""A team's submissions: upload an archive (streamed to disk under a cap, checked as an archive before extraction and
as a submission folder before it is accepted), list them, read one, hide one. Every route needs the team's token."""

from __future__ import annotations

import logging
import shutil
import uuid
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool

from ...utils import disk_problem
from ..archive import ArchiveError, UploadTooLarge, receive_upload_async
from ..refusals import check_name, responses
from ..store import Refused
from .deps import CurrentTeam, ServerState, SubmissionId

logger = logging.getLogger(__name__)
router = APIRouter()


@router.post("/api/submissions", status_code=202, summary="Upload a submission archive (zip or tar) as the request body",
             responses=responses(400, 401, 403, 413, 429, 507))
async def api_upload(request: Request, team: CurrentTeam, server: ServerState,
                     name: str = Query("submission.zip", max_length=200)) -> Any:
    check_name(name)
    challenge = server.challenge
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


@router.get("/api/submissions", summary="The team's own submissions with their status and public scores",
            responses=responses(401))
def api_submissions(team: CurrentTeam, server: ServerState) -> Any:
    return {"team": team.name, "submissions": server.challenge.submissions(team)}


@router.get("/api/submissions/{submission_id}", summary="One of the team's own submissions", responses=responses(401, 404))
def api_submission(submission_id: SubmissionId, team: CurrentTeam, server: ServerState) -> Any:
    for entry in server.challenge.submissions(team):
        if entry["id"] == submission_id:
            return entry
    raise Refused(404, f"team {team.name} has no submission {submission_id}")


@router.delete("/api/submissions/{submission_id}", responses=responses(401, 403, 404),
               summary="Hide one of the team's submissions (it still counts toward its day's limit); refused once the "
                       "phase has closed")
def api_delete(submission_id: SubmissionId, team: CurrentTeam, server: ServerState) -> Any:
    server.challenge.delete_submission(team, submission_id)
    return {"id": submission_id, "deleted": True}
