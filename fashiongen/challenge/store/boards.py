"""The leaderboards: each enabled team's best public score, and once the phase has closed, the private score of
that same submission."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..config import format_time
from ..db import Transaction
from ..records import Refused
from .base import ChallengeRecords

PRIVATE_NOT_OPEN = "the private leaderboard opens when the phase closes"


def scores_of(tx: Transaction, ids: Sequence[int]) -> dict[tuple[int, str], dict[str, Any]]:
    """(submission id, half) -> its score's value and metrics, for the submissions of `ids` that have scores."""
    if not ids:
        return {}
    marks = ", ".join("?" * len(ids))
    rows = tx.execute(f"SELECT submission_id, half, value, metrics FROM scores WHERE submission_id IN ({marks})", ids).all()
    return {(sid, half): {"value": value, **json.loads(metrics)} for sid, half, value, metrics in rows}


class BoardRecords(ChallengeRecords):
    """The public and private leaderboards."""

    def _better(self, a: float | None, b: float | None) -> bool:
        if a is None:
            return False
        return b is None or (a > b if self.config.higher_is_better else a < b)

    def leaderboard(self, half: str = "public") -> list[dict[str, Any]]:
        """One row per enabled team, best first. Public: each team's best public score. Private (only once the phase
        has closed): the private score of the submission with the team's best public score, so the hidden half never
        chooses. Both rank the entries that stood at the close: deletions are refused after it and nothing is accepted."""
        if half == "private" and not self.phase_closed():
            raise Refused(403, PRIVATE_NOT_OPEN)
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
            private = scores_of(tx, [entry[0] for entry in best.values()]) if half == "private" else {}
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
