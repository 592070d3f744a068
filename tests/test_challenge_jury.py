import itertools
import math
import time
from collections import Counter

import numpy as np
import pytest

from fashiongen.challenge.jury import Ranking, Vote, bradley_terry, comparison_key, next_comparison, rank

TEAMS = ["ada", "bob", "cyd", "dee"]
TRUE = np.array([-1.0, 0.0, 0.5, 1.5])


def simulate(count: int, seed: int = 0, teams=TEAMS, strengths=TRUE) -> list[Vote]:
    """Votes on uniformly drawn pairs, each won with the Bradley-Terry probability of the known strengths."""
    rng = np.random.default_rng(seed)
    votes = []
    for _ in range(count):
        i, j = rng.choice(len(teams), size=2, replace=False)
        i_wins = rng.random() < 1 / (1 + math.exp(strengths[j] - strengths[i]))
        votes.append(Vote(teams[i], teams[j]) if i_wins else Vote(teams[j], teams[i]))
    return votes


def by_team(table: list[Ranking]) -> dict[str, Ranking]:
    return {row.team: row for row in table}


def test_hand_computed_two_teams():
    votes = [Vote("a", "b")] * 3 + [Vote("b", "a")]
    strengths = bradley_terry(votes, ["a", "b"], prior_games=0)
    assert strengths["a"] - strengths["b"] == pytest.approx(math.log(3), abs=1e-7)
    assert strengths["a"] + strengths["b"] == pytest.approx(0, abs=1e-12)


def test_recovers_known_strengths():
    strengths = bradley_terry(simulate(2000), TEAMS)
    found = np.array([strengths[team] for team in TEAMS])
    assert abs(found.mean()) < 1e-9
    assert np.abs(found - (TRUE - TRUE.mean())).max() < 0.15
    assert [row.team for row in rank(simulate(2000), TEAMS, bootstrap=200)] == ["dee", "cyd", "bob", "ada"]


def test_undefeated_team_is_finite_and_first():
    votes = simulate(300, teams=TEAMS[:3], strengths=TRUE[:3]) + [Vote("dee", team) for team in TEAMS[:3] for _ in range(5)]
    table = rank(votes, TEAMS, bootstrap=200)
    assert table[0].team == "dee" and (table[0].wins, table[0].losses, table[0].win_rate) == (15, 0, 1.0)
    assert all(math.isfinite(value) for row in table for value in (row.strength, row.low, row.high))
    with pytest.raises(ValueError, match="prior_games"):
        bradley_terry(votes, TEAMS, prior_games=0)


def test_intervals_contain_estimate_and_narrow_with_votes():
    few, many = by_team(rank(simulate(100), TEAMS, bootstrap=300)), by_team(rank(simulate(2000), TEAMS, bootstrap=300))
    for table in (few, many):
        assert all(row.low <= row.strength <= row.high for row in table.values())
    for team in TEAMS:
        assert many[team].high - many[team].low < 0.6 * (few[team].high - few[team].low)


def test_team_without_games_has_wide_interval():
    table = by_team(rank(simulate(500, teams=TEAMS[:3], strengths=TRUE[:3]), TEAMS, bootstrap=300))
    idle = table["dee"]
    assert (idle.wins, idle.losses, idle.win_rate) == (0, 0, 0.0)
    assert idle.high - idle.low > 3 * max(table[team].high - table[team].low for team in TEAMS[:3])
    assert idle.high - idle.low > 4
    for row in rank([], TEAMS, bootstrap=100):  # no votes yet: every team at 0, unsure
        assert row.strength == pytest.approx(0, abs=1e-12) and row.low < -2 and row.high > 2


def test_same_seed_same_intervals():
    votes = simulate(200)
    assert rank(votes, TEAMS, bootstrap=100, seed=3) == rank(votes, TEAMS, bootstrap=100, seed=3)
    assert rank(votes, TEAMS, bootstrap=100, seed=3) != rank(votes, TEAMS, bootstrap=100, seed=4)


def test_bad_votes_raise():
    with pytest.raises(ValueError, match="zed"):
        bradley_terry([Vote("ada", "zed")], TEAMS)
    with pytest.raises(ValueError, match="itself"):
        rank([Vote("ada", "ada")], TEAMS)


def test_comparison_key_ignores_sides():
    assert comparison_key("c1", "bob", "ada") == comparison_key("c1", "ada", "bob") == ("c1", "ada", "bob")


def test_next_comparison_full_run_is_balanced_random_and_ends():
    rng = np.random.default_rng(0)
    finalists, captions = ["t0", "t1", "t2", "t3"], [f"c{i}" for i in range(20)]
    done, per_pair, orders = set(), Counter(), set()
    while (shown := next_comparison(finalists, captions, done, rng)) is not None:
        caption, left, right = shown
        key = comparison_key(caption, left, right)
        assert key not in done and caption in captions
        done.add(key)
        per_pair[key[1:]] += 1
        orders.add((left, right))
        counts = [per_pair[pair] for pair in itertools.combinations(finalists, 2)]
        assert max(counts) - min(counts) <= 1
    assert len(done) == len(captions) * 6
    assert len(orders) == 12  # every pair shown both ways round
    assert next_comparison(["t0"], captions, set(), rng) is None
    assert next_comparison(finalists, [], set(), rng) is None


def test_next_comparison_is_fast_with_many_captions():
    rng = np.random.default_rng(1)
    finalists, captions = [f"team{i}" for i in range(10)], [f"cap{i}" for i in range(10_000)]
    done = set()
    start = time.perf_counter()
    for _ in range(200):
        done.add(comparison_key(*next_comparison(finalists, captions, done, rng)))
    assert (time.perf_counter() - start) / 200 < 0.05
    almost = {comparison_key(c, a, b) for c in captions for a, b in itertools.combinations(finalists[:2], 2)} - {
        ("cap7", "team0", "team1")}
    start = time.perf_counter()  # one pair left open on one caption: falls back to enumeration
    assert next_comparison(finalists[:2], captions, almost, rng)[0] == "cap7"
    assert time.perf_counter() - start < 0.05


def test_matches_newton_on_the_log_posterior():
    """The MM answer is the maximum of the likelihood times the prior games, found here independently by Newton."""
    votes = simulate(60, teams=TEAMS[:3], strengths=TRUE[:3]) + [Vote("dee", "ada")] * 3
    index = {team: i for i, team in enumerate(TEAMS)}
    wins = np.zeros((4, 4))
    for vote in votes:
        wins[index[vote.winner], index[vote.loser]] += 1
    games, x = wins + wins.T, np.zeros(4)
    for _ in range(50):
        beats = 1 / (1 + np.exp(x[None, :] - x[:, None]))  # [i, j]: P(i beats j)
        versus_prior = 1 / (1 + np.exp(-x))  # P(beating the strength-0 virtual opponent)
        gradient = wins.sum(1) - (games * beats).sum(1) + 0.5 - versus_prior
        curvature = games * beats * (1 - beats)
        hessian = curvature - np.diag(curvature.sum(1) + versus_prior * (1 - versus_prior))
        x = x - np.linalg.solve(hessian, gradient)
    strengths = bradley_terry(votes, TEAMS, prior_games=1.0)
    np.testing.assert_allclose([strengths[team] for team in TEAMS], x - x.mean(), atol=1e-6)
