"""A team's uploads and submissions: the daily limit and the refused-requests limit, accepting an upload with its
archive in one transaction (a killed server leaves either a whole accepted submission or nothing), a team's own list,
and hiding a submission."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import format_time, utc_day
from ..db import Transaction
from ..records import Account, Refused
from .base import ChallengeRecords
from .boards import scores_of

CHUNK_BYTES = 4 * 2**20


class SubmissionRecords(ChallengeRecords):
    """What a team may upload, the uploads accepted, and the team's view of them."""

    def used_today(self, tx: Transaction, team_id: int) -> int:
        return tx.value("SELECT COUNT(*) FROM submissions WHERE team_id = ? AND day = ?", (team_id, utc_day(self.clock())))

    def uploads_today(self, team: Account) -> int:
        """How many of today's (UTC) submissions the team has used, in a transaction of its own (the team page)."""
        with self.db.transaction(write=False) as tx:
            return self.used_today(tx, team.id)

    def check_may_upload(self, team: Account) -> None:
        """Refused when the phase is not open, today's limit is used up, or the team was refused too often lately."""
        now = self.clock()
        start, end = self.phase()
        if now < start:
            raise Refused(403, f"the challenge opens at {format_time(start)}")
        if now >= end:
            raise Refused(403, f"the challenge closed at {format_time(end)}")
        with self.db.transaction(write=False) as tx:
            used = self.used_today(tx, team.id)
            refusals = tx.execute("SELECT COUNT(*), MIN(at) FROM refusals WHERE team_id = ? AND at > ?",
                                  (team.id, now - 3600)).one()
        if used >= self.config.daily_limit:
            raise Refused(429, f"team {team.name} has used today's {self.config.daily_limit} submissions (UTC day "
                               f"{utc_day(now)}); the limit resets at 00:00 UTC", retry_after=self._seconds_to_midnight(now))
        if refusals[0] >= self.config.max_refusals_per_hour:
            wait = int(refusals[1] + 3600 - now) + 1
            raise Refused(429, f"team {team.name} had {refusals[0]} refused uploads in the last hour; try again in {wait} s",
                          retry_after=wait)

    @staticmethod
    def _seconds_to_midnight(now: float) -> int:
        return int(86400 - now % 86400) + 1

    def record_refusal(self, account: Account | None, reason: str, action: str = "upload.refused", counted: bool = True,
                       **detail: Any) -> None:
        """Audit a refused request; a team's counts toward its refused-requests limit when `counted`."""
        with self.db.transaction() as tx:
            if account is not None and account.kind == "team" and counted:
                tx.execute("INSERT INTO refusals (team_id, at, reason) VALUES (?, ?, ?)", (account.id, self.clock(), reason[:500]))
            self.audit(tx, account.name if account else "anonymous", action, reason=reason[:500], **detail)

    def accept(self, team: Account, archive: Path, archive_name: str, size: int, sha256: str, num_images: int) -> int:
        """Record an upload that passed every check: counted toward today's limit, its archive stored, queued."""
        now = self.clock()
        with self.db.transaction() as tx:
            self.lock_phase(tx)
            start, end = self.phase()
            if not start <= now < end:  # the phase closed while the upload was being received and checked
                raise Refused(403, f"the challenge closed at {format_time(end)}")
            if self.db.kind == "postgresql":  # one uploader of a team at a time past this line
                tx.execute("SELECT id FROM teams WHERE id = ? FOR UPDATE", (team.id,))
            if self.used_today(tx, team.id) >= self.config.daily_limit:
                raise Refused(429, f"team {team.name} has used today's {self.config.daily_limit} submissions",
                              retry_after=self._seconds_to_midnight(now))
            submission_id = tx.value(
                "INSERT INTO submissions (team_id, created, day, status, archive_name, size_bytes, sha256, num_images) "
                "VALUES (?, ?, ?, 'queued', ?, ?, ?, ?) RETURNING id",
                (team.id, now, utc_day(now), archive_name[:200], size, sha256, num_images))
            with archive.open("rb") as handle:
                for seq, chunk in enumerate(iter(lambda: handle.read(CHUNK_BYTES), b"")):
                    tx.execute("INSERT INTO archive_chunks (submission_id, seq, data) VALUES (?, ?, ?)", (submission_id, seq, chunk))
            self.audit(tx, team.name, "upload.accepted", submission=submission_id, sha256=sha256, bytes=size)
        return submission_id

    def write_archive(self, submission_id: int, destination: Path) -> Path:
        """The stored archive of a submission, written to `destination` chunk by chunk."""
        with destination.open("wb") as handle, self.db.transaction(write=False) as tx:
            count = tx.value("SELECT COUNT(*) FROM archive_chunks WHERE submission_id = ?", (submission_id,))
            for seq in range(count):
                handle.write(bytes(tx.value("SELECT data FROM archive_chunks WHERE submission_id = ? AND seq = ?",
                                            (submission_id, seq))))
        return destination

    # ---------------------------------------------------------------- a team's own submissions

    def submissions(self, team: Account | None = None, include_deleted: bool = False) -> list[dict[str, Any]]:
        """Submissions (a team's own when `team`), newest first; private scores only once the phase has closed."""
        closed = self.phase_closed()
        conditions, params = (["s.team_id = ?"], [team.id]) if team else ([], [])
        if not include_deleted:
            conditions.append("s.deleted = 0")
        where = "WHERE " + " AND ".join(conditions) if conditions else ""
        with self.db.transaction(write=False) as tx:
            rows = tx.execute("SELECT s.id, t.name, s.created, s.status, s.archive_name, s.size_bytes, s.sha256, s.num_images, "
                              "s.message, s.deleted, s.scored_at, s.attempts FROM submissions s JOIN teams t ON t.id = s.team_id "
                              f"{where} ORDER BY s.id DESC", params).all()
            scores = scores_of(tx, [row[0] for row in rows])
        result = []
        for (sid, name, created, status, archive_name, size, sha, num_images, message, deleted, scored_at, attempts) in rows:
            entry = {"id": sid, "team": name, "created": format_time(created), "status": status, "archive": archive_name,
                     "bytes": size, "sha256": sha, "images": num_images, "message": message, "deleted": bool(deleted),
                     "scored_at": format_time(scored_at) if scored_at else None, "attempts": attempts,
                     "public": scores.get((sid, "public"))}
            if closed:
                entry["private"] = scores.get((sid, "private"))
            result.append(entry)
        return result

    def delete_submission(self, team: Account, submission_id: int) -> None:
        """Hide a submission from the team's list and the leaderboards; it still counts toward its day's limit.
        Refused once the phase has closed: the entries that stood at the close are the ones the private board ranks."""
        with self.db.transaction() as tx:
            self.lock_phase(tx)
            if self.phase_closed():
                raise Refused(403, f"the phase closed at {format_time(self.phase()[1])}; its entries are frozen and "
                                   "can no longer be deleted")
            if tx.execute("UPDATE submissions SET deleted = 1 WHERE id = ? AND team_id = ?", (submission_id, team.id)).rowcount != 1:
                raise Refused(404, f"team {team.name} has no submission {submission_id}")
            self.audit(tx, team.name, "submission.delete", submission=submission_id)
