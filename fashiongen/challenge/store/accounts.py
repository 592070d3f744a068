"""Teams and jurors, their tokens (stored hashed) and their login sessions.

A token is `fgt_<id>_<secret>` (jurors `fgj_`): the id finds the row, the secret's SHA-256 is compared with
hmac.compare_digest.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from ..config import format_time
from ..records import Account, Refused
from .base import ChallengeRecords

TOKEN_PREFIX = {"team": "fgt", "juror": "fgj"}


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def new_token(kind: str, account_id: int) -> tuple[str, str]:
    """(token shown once, SHA-256 of its secret stored)."""
    secret = secrets.token_urlsafe(24)
    return f"{TOKEN_PREFIX[kind]}_{account_id}_{secret}", _sha256(secret)


class AccountRecords(ChallengeRecords):
    """Adding, listing, disabling and authenticating teams and jurors; the pages' login sessions."""

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
