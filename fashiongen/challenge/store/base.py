"""The records every concern of a challenge shares: its database and clock, its settings and phase, the audit log, the
captions and the hidden photos' reference statistics."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..config import ChallengeConfig, format_time, parse_time
from ..db import Database, Transaction

HALVES = ("public", "private")


@dataclass(frozen=True)
class CaptionRow:
    id: str
    caption: str
    attributes: dict[str, Any]
    half: str


class ChallengeRecords:
    """One challenge's shared records over a Database; `clock` (epoch seconds) decides days, phases and leases."""

    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self.db, self.clock = db, clock
        self._config: ChallengeConfig | None = None

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
