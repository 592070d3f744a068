"""Everything the server, the workers and the organiser CLI record, in one place: teams and jurors (tokens stored
hashed), submissions and their archives, the scoring queue with leases, scores, leaderboards, jury ballots and
votes, and the audit log.

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

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import ChallengeConfig, format_time, parse_time, utc_day
from .db import Database, Transaction
from .jury_records import JuryRecords
from .records import Account, Refused

CHUNK_BYTES = 4 * 2**20
HALVES = ("public", "private")
TOKEN_PREFIX = {"team": "fgt", "juror": "fgj"}


@dataclass(frozen=True)
class Job:
    submission_id: int
    team: str
    attempt: int


@dataclass(frozen=True)
class CaptionRow:
    id: str
    caption: str
    attributes: dict[str, Any]
    half: str


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def new_token(kind: str, account_id: int) -> tuple[str, str]:
    """(token shown once, SHA-256 of its secret stored)."""
    secret = secrets.token_urlsafe(24)
    return f"{TOKEN_PREFIX[kind]}_{account_id}_{secret}", _sha256(secret)


class Challenge(JuryRecords):
    """One challenge's records over a Database; `clock` (epoch seconds) decides days, phases and leases."""

    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self.db, self.clock = db, clock
        self._config: ChallengeConfig | None = None

    # ---------------------------------------------------------------- settings, phase, audit

    @property
    def config(self) -> ChallengeConfig:
        if self._config is None:
            with self.db.transaction(write=False) as tx:
                text = tx.value("SELECT value FROM meta WHERE key = 'config'")
            self._config = ChallengeConfig.from_dict(json.loads(text))
        return self._config

    def write_config(self, config: ChallengeConfig, tx: Transaction) -> None:
        tx.execute("INSERT INTO meta (key, value) VALUES ('config', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                   (json.dumps(config.to_dict()),))
        self._config = config

    def phase(self) -> tuple[float, float]:
        """(start, end) epoch seconds; `phase close` moves the end."""
        with self.db.transaction(write=False) as tx:
            closed = tx.value("SELECT value FROM meta WHERE key = 'phase_end'")
        end = float(closed) if closed is not None else parse_time(self.config.phase_end, "phase_end")
        return parse_time(self.config.phase_start, "phase_start"), end

    def phase_closed(self) -> bool:
        return self.clock() >= self.phase()[1]

    def close_phase(self, actor: str = "organiser") -> float:
        """End the phase now (or keep an end already passed): entries are frozen from then on."""
        with self.db.transaction() as tx:
            self.lock_phase(tx, exclusive=True)
            now = min(self.clock(), self.phase()[1])
            tx.execute("INSERT INTO meta (key, value) VALUES ('phase_end', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                       (repr(now),))
            self.audit(tx, actor, "phase.close", at=format_time(now))
        return now

    def lock_phase(self, tx: Transaction, exclusive: bool = False) -> None:
        """Order a transaction that depends on the phase after (or before) a concurrent `close_phase` on PostgreSQL
        (SQLite's write lock already does); the phase read next in `tx` is then the one that holds."""
        if self.db.kind == "postgresql":
            tx.execute("SELECT value FROM meta WHERE key = 'config' " + ("FOR UPDATE" if exclusive else "FOR SHARE"))

    def audit(self, tx: Transaction, actor: str, action: str, **detail: Any) -> None:
        tx.execute("INSERT INTO audit (at, actor, action, detail) VALUES (?, ?, ?, ?)",
                   (self.clock(), actor, action, json.dumps(detail, sort_keys=True, default=str)))

    def log_event(self, actor: str, action: str, **detail: Any) -> None:
        """An audit entry in a transaction of its own."""
        with self.db.transaction() as tx:
            self.audit(tx, actor, action, **detail)

    def audit_log(self, limit: int | None = None) -> list[dict[str, Any]]:
        with self.db.transaction(write=False) as tx:
            rows = tx.execute("SELECT id, at, actor, action, detail FROM audit ORDER BY id"
                              + (f" DESC LIMIT {int(limit)}" if limit else "")).all()
        return [{"id": i, "at": format_time(at), "actor": actor, "action": action, "detail": json.loads(detail)}
                for i, at, actor, action, detail in rows]

    # ---------------------------------------------------------------- captions and reference statistics

    def captions(self, half: str | None = None) -> list[CaptionRow]:
        with self.db.transaction(write=False) as tx:
            rows = tx.execute("SELECT id, caption, attributes, half FROM captions ORDER BY position").all()
        return [CaptionRow(i, c, json.loads(a), h) for i, c, a, h in rows if half is None or h == half]

    def reference(self, half: str, name: str) -> bytes:
        with self.db.transaction(write=False) as tx:
            data = tx.value("SELECT data FROM reference WHERE half = ? AND name = ?", (half, name))
        if data is None:
            raise KeyError(f"no reference {name!r} for the {half} half")
        return bytes(data)

    # ---------------------------------------------------------------- accounts and sessions

    def _add_account(self, kind: str, name: str, actor: str) -> str:
        name = name.strip()
        if not name or len(name) > 64 or not name.isprintable():
            raise Refused(400, f"{kind} name {name!r}: 1-64 printable characters")
        table = "teams" if kind == "team" else "jurors"
        with self.db.transaction() as tx:
            if tx.value(f"SELECT id FROM {table} WHERE name = ?", (name,)) is not None:
                raise Refused(409, f"a {kind} named {name!r} exists already")
            account_id = tx.value(f"INSERT INTO {table} (name, secret_sha256, created) VALUES (?, '', ?) RETURNING id",
                                  (name, self.clock()))
            token, stored = new_token(kind, account_id)
            tx.execute(f"UPDATE {table} SET secret_sha256 = ? WHERE id = ?", (stored, account_id))
            self.audit(tx, actor, f"{kind}.add", name=name, id=account_id)
        return token

    def add_team(self, name: str, actor: str = "organiser") -> str:
        return self._add_account("team", name, actor)

    def add_juror(self, name: str, actor: str = "organiser") -> str:
        return self._add_account("juror", name, actor)

    def set_disabled(self, kind: str, name: str, disabled: bool, actor: str = "organiser") -> None:
        table = "teams" if kind == "team" else "jurors"
        with self.db.transaction() as tx:
            if tx.execute(f"UPDATE {table} SET disabled = ? WHERE name = ?", (int(disabled), name)).rowcount != 1:
                raise Refused(404, f"no {kind} named {name!r}")
            self.audit(tx, actor, f"{kind}.{'disable' if disabled else 'enable'}", name=name)

    def accounts(self, kind: str) -> list[dict[str, Any]]:
        table = "teams" if kind == "team" else "jurors"
        with self.db.transaction(write=False) as tx:
            rows = tx.execute(f"SELECT id, name, disabled, created FROM {table} ORDER BY id").all()
        return [{"id": i, "name": n, "disabled": bool(d), "created": format_time(c)} for i, n, d, c in rows]

    def authenticate(self, kind: str, token: str | None) -> Account | None:
        """The enabled account a token belongs to, or None; the secret is compared in constant time."""
        prefix, _, rest = (token or "").partition("_")
        account_id, _, secret = rest.partition("_")
        if prefix != TOKEN_PREFIX[kind] or not account_id.isascii() or not account_id.isdigit() or len(account_id) > 18 \
                or not secret or len(token or "") > 200:
            return None
        table = "teams" if kind == "team" else "jurors"
        with self.db.transaction(write=False) as tx:
            row = tx.execute(f"SELECT id, name, secret_sha256, disabled FROM {table} WHERE id = ?", (int(account_id),)).one()
        stored = row[2] if row else _sha256("no such account")
        matches = hmac.compare_digest(_sha256(secret), stored)
        return Account(row[0], row[1], kind) if row and matches and not row[3] else None

    def create_session(self, account: Account) -> tuple[str, str]:
        """(cookie secret, CSRF token) of a new login that lasts config.session_hours."""
        secret, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        with self.db.transaction() as tx:
            tx.execute("DELETE FROM sessions WHERE expires < ?", (self.clock(),))
            tx.execute("INSERT INTO sessions (secret_sha256, kind, subject_id, csrf, expires) VALUES (?, ?, ?, ?, ?)",
                       (_sha256(secret), account.kind, account.id, csrf, self.clock() + 3600 * self.config.session_hours))
            self.audit(tx, account.name, f"{account.kind}.login")
        return secret, csrf

    def session(self, kind: str, secret: str | None) -> tuple[Account, str] | None:
        """(account, CSRF token) of a live session cookie of this kind, or None."""
        if not secret or len(secret) > 100:
            return None
        table = "teams" if kind == "team" else "jurors"
        with self.db.transaction(write=False) as tx:
            row = tx.execute(f"SELECT a.id, a.name, s.csrf FROM sessions s JOIN {table} a ON a.id = s.subject_id "
                             "WHERE s.secret_sha256 = ? AND s.kind = ? AND s.expires > ? AND a.disabled = 0",
                             (_sha256(secret), kind, self.clock())).one()
        return (Account(row[0], row[1], kind), row[2]) if row else None

    def end_session(self, secret: str) -> None:
        with self.db.transaction() as tx:
            tx.execute("DELETE FROM sessions WHERE secret_sha256 = ?", (_sha256(secret),))

    # ---------------------------------------------------------------- uploads

    def used_today(self, tx: Transaction, team_id: int) -> int:
        return tx.value("SELECT COUNT(*) FROM submissions WHERE team_id = ? AND day = ?", (team_id, utc_day(self.clock())))

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
            scores = self._scores(tx, [row[0] for row in rows])
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

    @staticmethod
    def _scores(tx: Transaction, ids: Sequence[int]) -> dict[tuple[int, str], dict[str, Any]]:
        if not ids:
            return {}
        marks = ", ".join("?" * len(ids))
        rows = tx.execute(f"SELECT submission_id, half, value, metrics FROM scores WHERE submission_id IN ({marks})", ids).all()
        return {(sid, half): {"value": value, **json.loads(metrics)} for sid, half, value, metrics in rows}

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

    # ---------------------------------------------------------------- the scoring queue

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

    # ---------------------------------------------------------------- leaderboards

    def _better(self, a: float | None, b: float | None) -> bool:
        if a is None:
            return False
        return b is None or (a > b if self.config.higher_is_better else a < b)

    def leaderboard(self, half: str = "public") -> list[dict[str, Any]]:
        """One row per enabled team, best first. Public: each team's best public score. Private (only once the phase
        has closed): the private score of the submission with the team's best public score, so the hidden half never
        chooses. Both rank the entries that stood at the close: deletions are refused after it and nothing is accepted."""
        if half == "private" and not self.phase_closed():
            raise Refused(403, "the private leaderboard opens when the phase closes")
        with self.db.transaction(write=False) as tx:
            rows = tx.execute("SELECT t.name, s.id, s.created, c.value, c.metrics FROM submissions s "
                              "JOIN teams t ON t.id = s.team_id JOIN scores c ON c.submission_id = s.id "
                              "WHERE s.status = 'scored' AND s.deleted = 0 AND t.disabled = 0 AND c.half = 'public' "
                              "AND s.created <= ? ORDER BY s.id", (self.phase()[1],)).all()  # what stood at the close
            counts = dict(tx.execute("SELECT t.name, COUNT(*) FROM submissions s JOIN teams t ON t.id = s.team_id "
                                     "WHERE s.deleted = 0 GROUP BY t.name").all())
            best: dict[str, tuple] = {}
            for name, sid, created, value, metrics in rows:
                if name not in best or self._better(value, best[name][2]):
                    best[name] = (sid, created, value, json.loads(metrics))
            private = self._scores(tx, [entry[0] for entry in best.values()]) if half == "private" else {}
        board = []
        for name, (sid, created, value, metrics) in best.items():
            row = {"team": name, "submission": sid, "created": format_time(created), "submissions": counts.get(name, 0),
                   "public": {"value": value, **metrics}}
            if half == "private":
                row["private"] = private.get((sid, "private"))
                row["value"] = row["private"]["value"] if row["private"] else None
            else:
                row["value"] = value
            board.append(row)
        sign = -1.0 if self.config.higher_is_better else 1.0
        board.sort(key=lambda r: (r["value"] is None, sign * (r["value"] or 0.0), r["submission"]))
        for place, row in enumerate(board, start=1):
            row["rank"] = place
        return board
