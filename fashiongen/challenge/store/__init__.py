"""Everything the server, the workers and the organiser CLI record, by concern: teams and jurors (tokens stored hashed)
and sessions (accounts.py), uploads and submissions with their archives (submissions.py), the scoring queue with
leases (queue.py), scores and leaderboards (boards.py), jury ballots and votes (jury.py), over the settings, phase and
audit log they share (base.py). `Challenge` is all of them on one database, for the callers that use several.

    challenge = Challenge(Database(url))
    token = challenge.add_team("team-a")                        # shown once; only its SHA-256 is kept
    team = challenge.authenticate("team", token)                # (id, name) or None, compared in constant time
    submission_id = challenge.accept(team.id, archive, ...)     # counts toward today's limit, queued for scoring
    job = challenge.claim("worker-1")                           # leased; another worker retries it when the lease ends

A token is `fgt_<id>_<secret>` (jurors `fgj_`): the id finds the row, the secret's SHA-256 is compared with
hmac.compare_digest. A submission is accepted, counted and its archive stored in one transaction, so a killed server
leaves either a whole accepted submission or nothing. A job's scores are written in the transaction that marks it
scored, and only by the worker that holds its lease, so each accepted submission is scored exactly once.
"""

from __future__ import annotations

from ..records import Account, Refused
from .accounts import TOKEN_PREFIX, AccountRecords, new_token
from .base import HALVES, CaptionRow, ChallengeRecords
from .boards import PRIVATE_NOT_OPEN, BoardRecords, scores_of
from .jury import JuryRecords
from .queue import Job, QueueRecords
from .submissions import CHUNK_BYTES, SubmissionRecords

__all__ = ["CHUNK_BYTES", "HALVES", "PRIVATE_NOT_OPEN", "TOKEN_PREFIX", "Account", "AccountRecords", "BoardRecords",
           "CaptionRow", "Challenge", "ChallengeRecords", "Job", "JuryRecords", "QueueRecords", "Refused",
           "SubmissionRecords", "new_token", "scores_of"]


class Challenge(AccountRecords, SubmissionRecords, QueueRecords, JuryRecords):
    """One challenge's records over a Database, every concern on one object; `clock` (epoch seconds) decides days,
    phases and leases."""
