"""The challenge's one database: SQLite in WAL mode inside the challenge folder (the default, no other service) or
PostgreSQL (`postgresql://...`), so several scoring machines can share one job queue.

    db = Database("challenge/challenge.sqlite3")          # or Database("postgresql://user:pw@host/db")
    with db.transaction() as tx:                           # one write transaction: all or nothing
        tx.execute("INSERT INTO audit (at, actor, action, detail) VALUES (?, ?, ?, ?)", (...))

SQL is written once with `?` placeholders and the few dialect words as `{id}`, `{blob}`, `{float}`; this module
turns it into each dialect. A write transaction takes SQLite's write lock at its start (BEGIN IMMEDIATE), so a
read-then-write (the daily limit, claiming a job) cannot interleave with another writer; PostgreSQL gets the same
from row locks (`SELECT ... FOR UPDATE`, and `SKIP LOCKED` for the job queue).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from ..errors import UserError

SCHEMA_VERSION = 1
DIALECT = {
    "sqlite": {"id": "INTEGER PRIMARY KEY AUTOINCREMENT", "blob": "BLOB", "float": "REAL"},
    "postgresql": {"id": "BIGSERIAL PRIMARY KEY", "blob": "BYTEA", "float": "DOUBLE PRECISION"},
}
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS captions (id TEXT PRIMARY KEY, caption TEXT NOT NULL, attributes TEXT NOT NULL,
    half TEXT NOT NULL, position INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS reference (half TEXT NOT NULL, name TEXT NOT NULL, data {blob} NOT NULL, PRIMARY KEY (half, name));
CREATE TABLE IF NOT EXISTS teams (id {id}, name TEXT NOT NULL UNIQUE, secret_sha256 TEXT NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0, created {float} NOT NULL);
CREATE TABLE IF NOT EXISTS jurors (id {id}, name TEXT NOT NULL UNIQUE, secret_sha256 TEXT NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0, created {float} NOT NULL);
CREATE TABLE IF NOT EXISTS submissions (id {id}, team_id INTEGER NOT NULL REFERENCES teams (id),
    created {float} NOT NULL, day TEXT NOT NULL, status TEXT NOT NULL, archive_name TEXT NOT NULL,
    size_bytes INTEGER NOT NULL, sha256 TEXT NOT NULL, num_images INTEGER NOT NULL, message TEXT NOT NULL DEFAULT '',
    deleted INTEGER NOT NULL DEFAULT 0, lease_owner TEXT, lease_until {float}, attempts INTEGER NOT NULL DEFAULT 0,
    times_scored INTEGER NOT NULL DEFAULT 0, scored_at {float}, scoring_seconds {float});
CREATE INDEX IF NOT EXISTS submissions_team_day ON submissions (team_id, day);
CREATE INDEX IF NOT EXISTS submissions_status ON submissions (status, id);
CREATE TABLE IF NOT EXISTS archive_chunks (submission_id INTEGER NOT NULL REFERENCES submissions (id),
    seq INTEGER NOT NULL, data {blob} NOT NULL, PRIMARY KEY (submission_id, seq));
CREATE TABLE IF NOT EXISTS scores (submission_id INTEGER NOT NULL REFERENCES submissions (id), half TEXT NOT NULL,
    value {float}, metrics TEXT NOT NULL, PRIMARY KEY (submission_id, half));
CREATE TABLE IF NOT EXISTS refusals (id {id}, team_id INTEGER NOT NULL REFERENCES teams (id), at {float} NOT NULL,
    reason TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS refusals_team_at ON refusals (team_id, at);
CREATE TABLE IF NOT EXISTS finalists (team_id INTEGER PRIMARY KEY REFERENCES teams (id),
    submission_id INTEGER NOT NULL REFERENCES submissions (id));
CREATE TABLE IF NOT EXISTS sessions (secret_sha256 TEXT PRIMARY KEY, kind TEXT NOT NULL, subject_id INTEGER NOT NULL,
    csrf TEXT NOT NULL, expires {float} NOT NULL);
CREATE TABLE IF NOT EXISTS ballots (id {id}, juror_id INTEGER NOT NULL REFERENCES jurors (id), caption_id TEXT NOT NULL,
    left_team INTEGER NOT NULL, right_team INTEGER NOT NULL, created {float} NOT NULL, used INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS votes (id {id}, juror_id INTEGER NOT NULL REFERENCES jurors (id), caption_id TEXT NOT NULL,
    team_low INTEGER NOT NULL, team_high INTEGER NOT NULL, winner INTEGER NOT NULL, left_team INTEGER NOT NULL,
    at {float} NOT NULL, UNIQUE (juror_id, caption_id, team_low, team_high));
CREATE TABLE IF NOT EXISTS audit (id {id}, at {float} NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
    detail TEXT NOT NULL);
"""


class DatabaseError(UserError, RuntimeError):
    """The database cannot be opened, or holds no challenge (or another schema version)."""


def is_url(text: str) -> bool:
    return text.startswith(("postgresql://", "postgres://"))


class Transaction:
    """A cursor that speaks `?` placeholders on either database."""

    def __init__(self, cursor: Any, kind: str) -> None:
        self._cursor, self.kind = cursor, kind

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Transaction:
        if self.kind == "postgresql":
            sql = sql.replace("?", "%s")
        self._cursor.execute(sql, tuple(params))
        return self

    def one(self) -> tuple | None:
        return self._cursor.fetchone()

    def all(self) -> list[tuple]:
        return list(self._cursor.fetchall())

    def value(self, sql: str, params: Sequence[Any] = ()) -> Any:
        row = self.execute(sql, params).one()
        return None if row is None else row[0]

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount


class Database:
    """One challenge database; a connection per thread (the server's request threads, a worker's heartbeat)."""

    def __init__(self, location: str | Path) -> None:
        self.location = str(location)
        self.kind = "postgresql" if is_url(self.location) else "sqlite"
        self._local = threading.local()

    def __repr__(self) -> str:  # never print a URL's password
        return f"Database({self.kind}: {self.describe()})"

    def describe(self) -> str:
        if self.kind == "sqlite":
            return self.location
        from urllib.parse import urlsplit

        parts = urlsplit(self.location)
        return f"postgresql://{parts.hostname or ''}{':' + str(parts.port) if parts.port else ''}{parts.path}"

    def _connect(self) -> Any:
        if self.kind == "sqlite":
            connection = sqlite3.connect(self.location, timeout=60, isolation_level=None, check_same_thread=False)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a killed process loses no commit
            connection.execute("PRAGMA foreign_keys=ON")
            connection.execute("PRAGMA busy_timeout=60000")
            return connection
        try:
            import psycopg
        except ImportError:
            raise DatabaseError("PostgreSQL needs the psycopg package: pip install 'fashiongen[postgres]'") from None
        try:
            return psycopg.connect(self.location, autocommit=True, connect_timeout=10)
        except psycopg.OperationalError as error:
            raise DatabaseError(f"cannot connect to {self.describe()}: {str(error).splitlines()[0]}") from None

    def connection(self) -> Any:
        connection = getattr(self._local, "connection", None)
        if connection is None or (self.kind == "postgresql" and connection.closed):
            connection = self._local.connection = self._connect()
        return connection

    def close(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None

    @contextmanager
    def transaction(self, write: bool = True) -> Iterator[Transaction]:
        """All statements inside commit together or not at all; SQLite writers take the write lock first. A
        transaction opened inside another on the same thread joins it."""
        current = getattr(self._local, "transaction", None)
        if current is not None:
            yield current
            return
        connection = self.connection()
        cursor = connection.cursor()
        cursor.execute("BEGIN IMMEDIATE" if write and self.kind == "sqlite" else "BEGIN")
        self._local.transaction = transaction = Transaction(cursor, self.kind)
        try:
            yield transaction
        except BaseException:
            self._local.transaction = None
            cursor.execute("ROLLBACK")
            cursor.close()
            raise
        self._local.transaction = None
        try:
            cursor.execute("COMMIT")
        finally:
            cursor.close()

    def create_schema(self) -> None:
        words = DIALECT[self.kind]
        with self.transaction() as tx:
            for statement in SCHEMA.format(**words).split(";"):
                if statement.strip():
                    tx.execute(statement)
            tx.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?) ON CONFLICT (key) DO NOTHING",
                       (str(SCHEMA_VERSION),))

    def check_schema(self) -> None:
        """DatabaseError unless this database holds a challenge of this code's schema version."""
        try:
            with self.transaction(write=False) as tx:
                version = tx.value("SELECT value FROM meta WHERE key = 'schema_version'")
        except (sqlite3.Error, DatabaseError) as error:
            raise DatabaseError(f"{self.describe()} holds no challenge ({error}); create one with "
                                "`python -m fashiongen.challenge init`") from None
        except Exception as error:  # psycopg's errors, without importing it for SQLite users
            raise DatabaseError(f"{self.describe()} holds no challenge ({str(error).splitlines()[0]}); create one with "
                                "`python -m fashiongen.challenge init`") from None
        if version != str(SCHEMA_VERSION):
            raise DatabaseError(f"{self.describe()} has challenge schema version {version}, this code reads {SCHEMA_VERSION}")
