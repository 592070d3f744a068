"""The human jury: pairwise votes between finalist teams, ranked by a Bradley-Terry model with bootstrap intervals.

    key = comparison_key(caption_id, team_a, team_b)       # what a juror votes on once, whatever the sides shown
    shown = next_comparison(finalists, caption_ids, done_keys, rng)  # (caption_id, left, right) or None
    table = rank([Vote(winner, loser), ...], finalists)    # list[Ranking], best first, strengths centred at 0

Strengths are natural-log strengths: P(a beats b) = 1 / (1 + exp(strength_b - strength_a)).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Collection, Sequence

import numpy as np


@dataclass(frozen=True)
class Vote:
    winner: str  # team name
    loser: str


@dataclass(frozen=True)
class Ranking:
    team: str
    strength: float  # log-strength, centred so the teams' mean is 0
    low: float  # confidence interval of strength (percentile bootstrap)
    high: float
    wins: int
    losses: int
    win_rate: float  # wins / (wins + losses); 0.0 when no games


def _win_matrix(votes: Sequence[Vote], teams: Sequence[str]) -> np.ndarray:
    """[T, T] counts, [i, j] = times team i beat team j; ValueError on unknown teams, duplicates or self-votes."""
    index = {team: i for i, team in enumerate(teams)}
    if len(index) != len(teams):
        raise ValueError(f"duplicate team names in {list(teams)}")
    wins = np.zeros((len(teams), len(teams)))
    for vote in votes:
        for team in (vote.winner, vote.loser):
            if team not in index:
                raise ValueError(f"vote names unknown team {team!r}")
        if vote.winner == vote.loser:
            raise ValueError(f"vote of team {vote.winner!r} against itself")
        wins[index[vote.winner], index[vote.loser]] += 1
    return wins


def _solve(wins: np.ndarray, prior_games: float, iterations: int, tolerance: float) -> np.ndarray:
    """Hunter's MM on a batch: wins [B, T, T], plus `prior_games` split games against strength 1 -> centred logs [B, T]."""
    games = wins + wins.transpose(0, 2, 1)
    won = wins.sum(2) + prior_games / 2
    strength = won / (wins.sum(1) + prior_games / 2)  # win/loss odds: a close start
    for _ in range(iterations):
        pair_sums = strength[:, :, None] + strength[:, None, :]
        updated = won / ((games / pair_sums).sum(2) + prior_games / (strength + 1))
        if prior_games == 0:  # the likelihood alone fixes only ratios: pin the geometric mean to 1
            updated /= np.exp(np.log(updated).mean(1, keepdims=True))
        else:  # only the prior sees the common scale, which MM moves slowly: a Newton step on it, sum sigmoid(log p) = T/2
            odds = updated / (updated + 1)
            updated *= np.exp((len(odds[0]) / 2 - odds.sum(1, keepdims=True)) / (odds * (1 - odds)).sum(1, keepdims=True))
        change = np.abs(np.log(updated) - np.log(strength)).max(initial=0.0)
        strength = updated
        if change < tolerance:
            break
    logs = np.log(strength)
    return logs - logs.mean(1, keepdims=True)


def _beats_all(wins: np.ndarray) -> bool:
    """Whether every team beats every other directly or through a chain: Hunter's condition for a finite likelihood maximum."""
    reach = (wins > 0) | np.eye(len(wins), dtype=bool)
    for _ in range(int(np.ceil(np.log2(max(len(wins), 2))))):
        reach = reach | ((reach.astype(np.int64) @ reach.astype(np.int64)) > 0)
    return bool(reach.all())


def bradley_terry(votes: Sequence[Vote], teams: Sequence[str], prior_games: float = 1.0, iterations: int = 1000,
                  tolerance: float = 1e-9) -> dict[str, float]:
    """Maximum-a-posteriori log-strengths by Hunter's (2004) MM algorithm; `prior_games` virtual games against an average
    opponent (one win, one loss split as prior_games/2 each) keep an undefeated or winless team finite. Centred to mean 0."""
    if prior_games < 0:
        raise ValueError(f"prior_games must be >= 0, got {prior_games}")
    wins = _win_matrix(votes, teams)
    if len(teams) < 2:
        return {team: 0.0 for team in teams}
    if prior_games == 0 and not _beats_all(wins):
        raise ValueError("with prior_games=0 every team must beat every other, directly or through a chain of wins; "
                         "otherwise some strength is infinite (use prior_games > 0)")
    logs = _solve(wins[None], prior_games, iterations, tolerance)[0]
    return {team: float(value) for team, value in zip(teams, logs)}


def rank(votes: Sequence[Vote], teams: Sequence[str], confidence: float = 0.95, bootstrap: int = 1000, seed: int = 0,
         prior_games: float = 1.0) -> list[Ranking]:
    """Teams best first with percentile-bootstrap intervals (votes resampled with replacement). A team without votes, whose
    resamples are all the prior, gets the prior's own interval instead: logit of Beta(prior/2, prior/2) around its estimate."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if prior_games <= 0 and bootstrap > 0:
        raise ValueError("bootstrap needs prior_games > 0: a resample can leave a team unbeaten, with infinite strength")
    point = bradley_terry(votes, teams, prior_games)
    wins = _win_matrix(votes, teams)
    low = high = np.array([point[team] for team in teams])
    if bootstrap > 0 and len(teams) >= 2:
        rng = np.random.default_rng(seed)
        cells = np.flatnonzero(wins)  # resampling votes with replacement = multinomial counts over (winner, loser) cells
        samples = np.zeros((bootstrap, wins.size))
        if len(cells):
            samples[:, cells] = rng.multinomial(len(votes), wins.flat[cells] / len(votes), size=bootstrap)
        logs = _solve(samples.reshape(bootstrap, *wins.shape), prior_games, 1000, 1e-9)
        idle = (wins.sum(0) + wins.sum(1)) == 0
        share = np.clip(rng.beta(prior_games / 2, prior_games / 2, size=bootstrap), 1e-9, 1 - 1e-9)
        logs[:, idle] += np.log(share / (1 - share))[:, None]  # the prior's strength against the average opponent
        tail = 100 * (1 - confidence) / 2
        # a percentile interval can miss a biased estimate; widen it to hold the estimate, which pages draw inside it
        low = np.minimum(np.percentile(logs, tail, axis=0), low)
        high = np.maximum(np.percentile(logs, 100 - tail, axis=0), high)
    table = []
    for i, team in enumerate(teams):
        won, lost = int(wins[i].sum()), int(wins[:, i].sum())
        table.append(Ranking(team, point[team], float(low[i]), float(high[i]), won, lost,
                             won / (won + lost) if won + lost else 0.0))
    return sorted(table, key=lambda row: (-row.strength, row.team))


def comparison_key(caption_id: str, team_a: str, team_b: str) -> tuple[str, str, str]:
    """(caption_id, lower team, higher team): the unit a juror votes on once, whatever the sides shown."""
    if team_a == team_b:
        raise ValueError(f"a comparison needs two different teams, got {team_a!r} twice")
    return (caption_id, min(team_a, team_b), max(team_a, team_b))


def next_comparison(finalists: Sequence[str], caption_ids: Sequence[str], done: Collection[tuple[str, str, str]],
                    rng: np.random.Generator, tries: int = 64) -> tuple[str, str, str] | None:
    """A random (caption_id, left_team, right_team) the juror has not voted on (done holds comparison_keys), sides in random
    order, from a team pair this juror has seen least; None when all are done or under 2 finalists. O(done + captions)."""
    teams = sorted(set(finalists))
    captions = list(dict.fromkeys(caption_ids))
    pairs = [(a, b) for i, a in enumerate(teams) for b in teams[i + 1:]]
    if not pairs or not captions:
        return None
    done, caption_set = set(done), set(captions)
    seen = Counter((a, b) for caption, a, b in done if caption in caption_set)
    fewest = min(seen[pair] for pair in pairs)
    if fewest >= len(captions):
        return None
    candidates = [pair for pair in pairs if seen[pair] == fewest]  # all below len(captions): each has an open caption
    a, b = candidates[rng.integers(len(candidates))]
    for _ in range(tries):  # rejection sampling is fast while most captions are open for this pair
        caption = captions[rng.integers(len(captions))]
        if (caption, a, b) not in done:
            break
    else:  # few left: enumerate them
        open_captions = [caption for caption in captions if (caption, a, b) not in done]
        caption = open_captions[rng.integers(len(open_captions))]
    return (caption, a, b) if rng.random() < 0.5 else (caption, b, a)
