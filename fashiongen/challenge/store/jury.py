"""The jury's records: finalists, ballots drawn for jurors, their votes and the ranking (jury.py's Bradley-Terry)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..config import format_time
from ..jury import Vote, comparison_key, next_comparison, rank
from ..records import Account, Refused
from .boards import BoardRecords


class JuryRecords(BoardRecords):
    """Finalists (from the private leaderboard), ballots, votes and the jury's ranking."""

    def set_finalists(self, top: int | None = None, names: Sequence[str] = (), actor: str = "organiser") -> list[str]:
        """Finalists: the private leaderboard's `top` teams, or the named teams, each with its leaderboard submission."""
        board = {row["team"]: row for row in self.leaderboard("private")}
        chosen = list(names) if names else [row["team"] for row in sorted(board.values(), key=lambda r: r["rank"])][: top or 0]
        missing = [name for name in chosen if name not in board]
        if missing:
            raise Refused(404, f"no scored submission on the leaderboard for team(s) {', '.join(missing)}")
        if len(chosen) < 2:
            raise Refused(400, "a jury needs at least 2 finalists")
        with self.db.transaction() as tx:
            tx.execute("DELETE FROM finalists")
            for name in chosen:
                team_id = tx.value("SELECT id FROM teams WHERE name = ?", (name,))
                tx.execute("INSERT INTO finalists (team_id, submission_id) VALUES (?, ?)", (team_id, board[name]["submission"]))
            self.audit(tx, actor, "jury.finalists", teams=chosen)
        return chosen

    def finalists(self) -> dict[int, tuple[str, int]]:
        """team id -> (team name, the submission the jury sees)."""
        with self.db.transaction(write=False) as tx:
            rows = tx.execute("SELECT f.team_id, t.name, f.submission_id FROM finalists f JOIN teams t ON t.id = f.team_id").all()
        return {team_id: (name, sid) for team_id, name, sid in rows}

    def next_ballot(self, juror: Account, rng: np.random.Generator) -> dict[str, Any] | None:
        """A new ballot (random caption, random sides) for a comparison this juror has not voted on; None when done."""
        finalists = self.finalists()
        names = {name: team_id for team_id, (name, _) in finalists.items()}
        with self.db.transaction(write=False) as tx:
            done = tx.execute("SELECT caption_id, team_low, team_high FROM votes WHERE juror_id = ?", (juror.id,)).all()
        by_id = {team_id: name for name, team_id in names.items()}
        done_keys = {comparison_key(c, by_id.get(low, str(low)), by_id.get(high, str(high))) for c, low, high in done}
        picked = next_comparison(sorted(names), [c.id for c in self.captions()], done_keys, rng)
        if picked is None:
            return None
        caption_id, left, right = picked
        with self.db.transaction() as tx:
            ballot = tx.value("INSERT INTO ballots (juror_id, caption_id, left_team, right_team, created) VALUES (?, ?, ?, ?, ?) "
                              "RETURNING id", (juror.id, caption_id, names[left], names[right], self.clock()))
        return {"ballot": ballot, "caption_id": caption_id, "left": left, "right": right}

    def ballot(self, juror: Account, ballot_id: int) -> dict[str, Any]:
        with self.db.transaction(write=False) as tx:
            row = tx.execute("SELECT b.caption_id, b.left_team, b.right_team, b.used, c.caption FROM ballots b "
                             "JOIN captions c ON c.id = b.caption_id WHERE b.id = ? AND b.juror_id = ?",
                             (ballot_id, juror.id)).one()
        if row is None:
            raise Refused(404, f"no ballot {ballot_id} for juror {juror.name}")
        finalists = self.finalists()
        caption_id, left, right, used, caption = row
        if left not in finalists or right not in finalists:
            raise Refused(409, "the finalists changed since this ballot was drawn; draw another")
        return {"ballot": ballot_id, "caption_id": caption_id, "caption": caption, "used": bool(used),
                "left": {"team_id": left, "submission": finalists[left][1]},
                "right": {"team_id": right, "submission": finalists[right][1]}}

    def vote(self, juror: Account, ballot_id: int, choice: str) -> None:
        """Record the juror's choice ('left' or 'right') on a ballot; one vote per juror per comparison."""
        if choice not in ("left", "right"):
            raise Refused(400, f"choice {choice!r} is not 'left' or 'right'")
        ballot = self.ballot(juror, ballot_id)
        left, right = ballot["left"]["team_id"], ballot["right"]["team_id"]
        winner = left if choice == "left" else right
        low, high = sorted((left, right))
        with self.db.transaction() as tx:
            if tx.execute("UPDATE ballots SET used = 1 WHERE id = ? AND used = 0", (ballot_id,)).rowcount != 1:
                raise Refused(409, f"ballot {ballot_id} has been used")
            if tx.value("SELECT id FROM votes WHERE juror_id = ? AND caption_id = ? AND team_low = ? AND team_high = ?",
                        (juror.id, ballot["caption_id"], low, high)) is not None:
                raise Refused(409, f"juror {juror.name} has voted on this comparison already")
            tx.execute("INSERT INTO votes (juror_id, caption_id, team_low, team_high, winner, left_team, at) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?)", (juror.id, ballot["caption_id"], low, high, winner, left, self.clock()))
            self.audit(tx, juror.name, "jury.vote", ballot=ballot_id, caption=ballot["caption_id"])

    def votes(self) -> list[dict[str, Any]]:
        with self.db.transaction(write=False) as tx:
            rows = tx.execute("SELECT v.id, j.name, v.caption_id, tl.name, th.name, tw.name, v.left_team = v.team_low, v.at "
                              "FROM votes v JOIN jurors j ON j.id = v.juror_id JOIN teams tl ON tl.id = v.team_low "
                              "JOIN teams th ON th.id = v.team_high JOIN teams tw ON tw.id = v.winner ORDER BY v.id").all()
        return [{"id": i, "juror": juror, "caption_id": caption, "teams": [low, high], "winner": winner,
                 "left": low if left_is_low else high, "at": format_time(at)}
                for i, juror, caption, low, high, winner, left_is_low, at in rows]

    def jury_ranking(self, bootstrap: int = 1000) -> list[dict[str, Any]]:
        votes = self.votes()
        teams = sorted(name for name, _ in self.finalists().values())
        known = set(teams)
        pairs = [Vote(v["winner"], next(t for t in v["teams"] if t != v["winner"])) for v in votes
                 if set(v["teams"]) <= known]
        return [vars(row) for row in rank(pairs, teams, bootstrap=bootstrap)] if teams else []
