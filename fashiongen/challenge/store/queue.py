"""The scoring queue: workers claim the oldest queued submission with a lease, extend it while scoring, and record
the scores in the transaction that marks the job scored, only while they hold the lease, so each accepted submission
is scored exactly once. A lease that runs out gives the job to the next worker (up to config.max_attempts)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..records import Refused
from .base import ChallengeRecords


@dataclass(frozen=True)
class Job:
    submission_id: int
    team: str
    attempt: int


class QueueRecords(ChallengeRecords):
    """Claiming, extending, finishing, failing, releasing and requeueing scoring jobs."""

    def claim(self, worker: str) -> Job | None:
        """Lease the oldest queued submission (or one whose worker's lease ran out) to `worker`; None when none waits."""
        now, config = self.clock(), self.config
        lock = " FOR UPDATE SKIP LOCKED" if self.db.kind == "postgresql" else ""
        with self.db.transaction() as tx:
            expired = tx.execute("SELECT id, attempts, lease_owner FROM submissions WHERE status = 'scoring' AND lease_until < ?"
                                 + lock, (now,)).all()
            for sid, attempts, owner in expired:
                if attempts >= config.max_attempts:
                    tx.execute("UPDATE submissions SET status = 'failed', message = ?, lease_owner = NULL WHERE id = ?",
                               (f"scoring stopped {attempts} times without finishing (a crashed or killed worker)", sid))
                    self.audit(tx, "server", "score.abandoned", submission=sid, attempts=attempts)
                else:
                    self.audit(tx, "server", "score.lease_expired", submission=sid, worker=owner)
            row = tx.execute("SELECT s.id, t.name, s.attempts FROM submissions s JOIN teams t ON t.id = s.team_id "
                             "WHERE s.status = 'queued' OR (s.status = 'scoring' AND s.lease_until < ?) "
                             "ORDER BY s.id LIMIT 1" + (" FOR UPDATE OF s SKIP LOCKED" if lock else ""), (now,)).one()
            if row is None:
                return None
            sid, team, attempts = row
            tx.execute("UPDATE submissions SET status = 'scoring', lease_owner = ?, lease_until = ?, attempts = attempts + 1 "
                       "WHERE id = ?", (worker, now + config.lease_seconds, sid))
            self.audit(tx, worker, "score.claim", submission=sid, attempt=attempts + 1)
        return Job(sid, team, attempts + 1)

    def extend_lease(self, submission_id: int, worker: str) -> bool:
        """Keep a job while scoring it; False when the lease was lost (it ran out and another worker took the job)."""
        with self.db.transaction() as tx:
            return tx.execute("UPDATE submissions SET lease_until = ? WHERE id = ? AND status = 'scoring' AND lease_owner = ?",
                              (self.clock() + self.config.lease_seconds, submission_id, worker)).rowcount == 1

    def finish(self, submission_id: int, worker: str, scores: dict[str, tuple[float | None, dict[str, Any]]],
               seconds: float) -> bool:
        """Record a job's scores and mark it scored, in one transaction, only if `worker` still holds it."""
        with self.db.transaction() as tx:
            done = tx.execute("UPDATE submissions SET status = 'scored', lease_owner = NULL, lease_until = NULL, message = '', "
                              "times_scored = times_scored + 1, scored_at = ?, scoring_seconds = ? "
                              "WHERE id = ? AND status = 'scoring' AND lease_owner = ?",
                              (self.clock(), seconds, submission_id, worker)).rowcount == 1
            if not done:
                return False
            tx.execute("DELETE FROM scores WHERE submission_id = ?", (submission_id,))  # a rescore replaces the old scores
            for half, (value, metrics) in scores.items():
                tx.execute("INSERT INTO scores (submission_id, half, value, metrics) VALUES (?, ?, ?, ?)",
                           (submission_id, half, value, json.dumps(metrics, default=float)))
            self.audit(tx, worker, "score.done", submission=submission_id, seconds=round(seconds, 2),
                       **{half: value for half, (value, _) in scores.items()})
        return True

    def fail(self, submission_id: int, worker: str, message: str) -> bool:
        """Mark a job failed (its archive cannot be scored); it still counts toward its day's limit."""
        with self.db.transaction() as tx:
            done = tx.execute("UPDATE submissions SET status = 'failed', message = ?, lease_owner = NULL, lease_until = NULL "
                              "WHERE id = ? AND status = 'scoring' AND lease_owner = ?",
                              (message[:1000], submission_id, worker)).rowcount == 1
            if done:
                self.audit(tx, worker, "score.failed", submission=submission_id, message=message[:1000])
        return done

    def release(self, submission_id: int, worker: str) -> None:
        """Give a job back at once (its attempt still counts), after an error that was not the submission's fault."""
        with self.db.transaction() as tx:
            tx.execute("UPDATE submissions SET lease_until = ? WHERE id = ? AND status = 'scoring' AND lease_owner = ?",
                       (self.clock() - 1, submission_id, worker))

    def requeue(self, submission_ids: Iterable[int] | None = None, actor: str = "organiser") -> int:
        """Queue submissions to be scored again (all scored and failed ones when None); their old scores stay until then."""
        with self.db.transaction() as tx:
            if submission_ids is None:
                ids = [row[0] for row in tx.execute("SELECT id FROM submissions WHERE status IN ('scored', 'failed')").all()]
            else:
                ids = list(submission_ids)
            for sid in ids:
                if tx.execute("UPDATE submissions SET status = 'queued', attempts = 0, message = '' WHERE id = ? "
                              "AND status IN ('scored', 'failed', 'queued')", (sid,)).rowcount != 1:
                    raise Refused(404, f"no submission {sid} that is scored or failed")
            self.audit(tx, actor, "score.requeue", submissions=ids)
        return len(ids)

    def queue_counts(self) -> dict[str, int]:
        with self.db.transaction(write=False) as tx:
            return dict(tx.execute("SELECT status, COUNT(*) FROM submissions GROUP BY status").all())
