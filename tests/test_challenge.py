"""The challenge server over real HTTP on 127.0.0.1, on SQLite and on PostgreSQL: the whole flow (init, teams, uploads,
scoring, leaderboards, phase close, jury, export), the daily limit and its reset, refusals and their rate limit,
concurrent uploads, and what must never leak."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest

from challenge_helpers import (
    Clock,
    ThreadServer,
    clone_challenge,
    source_photos,
    write_submission,
    zip_bytes,
)
from fashiongen.challenge.__main__ import main as challenge_main
from fashiongen.challenge.store import Challenge
from fashiongen.challenge.worker import Worker

DAY = 86400.0


@pytest.fixture(scope="module")
def photos(challenge_source: Path) -> dict[str, np.ndarray]:
    return source_photos(challenge_source)


def upload(url: str, token: str | None, body: bytes, name: str = "submission.zip") -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(f"{url}/api/submissions", params={"name": name}, content=body, headers=headers, timeout=120)


def captions_of(url: str) -> list[dict]:
    response = httpx.get(f"{url}/api/captions")
    assert response.status_code == 200
    return [json.loads(line) for line in response.text.splitlines()]


def archive(tmp_path: Path, url: str, photos: dict, noise: float, seed: int = 0, **kwargs) -> bytes:
    folder = write_submission(tmp_path / f"set-{noise}-{seed}-{len(list(tmp_path.iterdir()))}", captions_of(url), photos,
                              noise, seed, **kwargs)
    return zip_bytes(folder)


def drain(challenge: Challenge, folder: Path) -> int:
    return Worker(challenge, folder / "work", name="test-worker", poll_seconds=0.1).run(drain=True)


def test_full_flow(challenge_template, tmp_path: Path, photos) -> None:
    folder = tmp_path / "challenge"
    challenge = clone_challenge(challenge_template, folder)
    tokens = {name: challenge.add_team(name) for name in ("good", "fair", "poor")}
    with ThreadServer(challenge, folder) as server:
        url = server.url
        info = httpx.get(f"{url}/api/challenge").json()
        assert info["resolution"] == 32 and info["captions"] == 12 and not info["closed"]
        assert "/api/submissions" in httpx.get(f"{url}/openapi.json").json()["paths"]

        accepted = {}
        for name, noise in (("good", 4.0), ("fair", 30.0), ("poor", 90.0)):
            response = upload(url, tokens[name], archive(tmp_path, url, photos, noise))
            assert response.status_code == 202, response.text
            accepted[name] = response.json()["id"]
        mine = httpx.get(f"{url}/api/submissions", headers={"Authorization": f"Bearer {tokens['good']}"}).json()
        assert [s["id"] for s in mine["submissions"]] == [accepted["good"]] and mine["submissions"][0]["status"] == "queued"

        assert drain(challenge, folder) == 3
        mine = httpx.get(f"{url}/api/submissions/{accepted['good']}", headers={"Authorization": f"Bearer {tokens['good']}"}).json()
        assert mine["status"] == "scored" and "private" not in mine
        assert mine["public"]["fid"] >= 0 and mine["public"]["fid_floor"] is not None
        assert mine["public"]["critic_score_real"] is not None and "category" in mine["public"]["attribute_accuracy"]
        # another team's submission, and the private scores, stay hidden
        other = httpx.get(f"{url}/api/submissions/{accepted['poor']}", headers={"Authorization": f"Bearer {tokens['good']}"})
        assert other.status_code == 404
        assert httpx.get(f"{url}/api/leaderboard/private").status_code == 403
        assert httpx.get(f"{url}/leaderboard/private").status_code == 403

        board = httpx.get(f"{url}/api/leaderboard").json()["rows"]
        assert [row["team"] for row in board] == ["good", "fair", "poor"]  # less noise, lower FID
        assert all("private" not in row for row in board)
        assert board[0]["public"]["critic_score"] > board[2]["public"]["critic_score"]
        page = httpx.get(f"{url}/").text
        assert page.index(">good<") < page.index(">fair<") < page.index(">poor<") and "real photos" in page

        # a second, better submission of "poor" raises its public row; the leaderboard keeps each team's best
        response = upload(url, tokens["poor"], archive(tmp_path, url, photos, 1.0, seed=3))
        assert response.status_code == 202
        drain(challenge, folder)
        board = httpx.get(f"{url}/api/leaderboard").json()["rows"]
        assert board[0]["team"] == "poor" and board[0]["submissions"] == 2

        # the phase closes: no more uploads, the private leaderboard and private scores open
        assert challenge_main(["phase", "close", str(folder)]) == 0
        closed = upload(url, tokens["fair"], archive(tmp_path, url, photos, 5.0))
        assert closed.status_code == 403 and "closed" in closed.json()["detail"]
        private = httpx.get(f"{url}/api/leaderboard/private").json()["rows"]
        assert {row["team"] for row in private} == {"good", "fair", "poor"}
        assert all(row["private"]["fid"] >= 0 for row in private)
        mine = httpx.get(f"{url}/api/submissions/{accepted['good']}", headers={"Authorization": f"Bearer {tokens['good']}"}).json()
        assert mine["private"]["fid"] >= 0
        assert ">good<" in httpx.get(f"{url}/leaderboard/private").text

        # the jury: two finalists, one juror, votes through the page's form with its CSRF token
        assert challenge_main(["jury", "finalists", str(folder), "--top", "2"]) == 0
        juror_token = challenge.add_juror("ada")
        jury = httpx.Client(base_url=url, follow_redirects=True)
        login = jury.get("/jury").text
        assert "login" in login.lower()
        login_csrf = re.search(r'name="csrf" value="([^"]+)"', login).group(1)  # the login form's own CSRF token
        assert jury.post("/jury/login", data={"token": juror_token + "x", "csrf": login_csrf}).status_code == 401
        page = jury.post("/jury/login", data={"token": juror_token, "csrf": login_csrf}).text
        cookie = jury.cookies.get("fg_jury")
        assert cookie and cookie != juror_token
        ballot = re.search(r'name="ballot" value="(\d+)"', page).group(1)
        csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
        image = jury.get(f"/jury/image/{ballot}/left")
        assert image.status_code == 200 and image.content[:4] == b"\x89PNG"
        assert httpx.get(f"{url}/jury/image/{ballot}/left").status_code == 404  # not logged in
        forged = jury.post("/jury/vote", data={"ballot": ballot, "choice": "left", "csrf": "forged"})
        assert forged.status_code == 403
        votes = 0
        while 'name="ballot"' in page:
            ballot = re.search(r'name="ballot" value="(\d+)"', page).group(1)
            csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
            page = jury.post("/jury/vote", data={"ballot": ballot, "choice": "left", "csrf": csrf}).text
            votes += 1
        assert votes == 12 and "every comparison" in page  # one vote per caption for the one pair of finalists
        again = jury.post("/jury/vote", data={"ballot": ballot, "choice": "right", "csrf": csrf})
        assert again.status_code == 409  # a ballot counts once
        ranking = challenge.jury_ranking(bootstrap=100)
        assert len(ranking) == 2 and sum(r["wins"] for r in ranking) == 12

    # export: results, leaderboards and jury votes as JSON and CSV; nothing overwritten without --overwrite
    out = tmp_path / "export"
    assert challenge_main(["export", str(folder), str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    for table in ("submissions", "leaderboard_public", "leaderboard_private", "jury_votes", "jury_ranking"):
        assert f"{table}.json" in names and f"{table}.csv" in names
    assert len(json.loads((out / "jury_votes.json").read_text())) == 12
    assert len(json.loads((out / "submissions.json").read_text())) == 4
    assert challenge_main(["export", str(folder), str(out)]) == 2
    actions = {row["action"] for row in challenge.audit_log()}
    assert {"team.add", "upload.accepted", "score.claim", "score.done", "phase.close", "jury.vote", "jury.csrf_refused",
            "juror.login", "export"} <= actions
    # every accepted submission scored exactly once
    assert all(s["status"] == "scored" for s in challenge.submissions(include_deleted=True))
    with challenge.db.transaction(write=False) as tx:
        assert tx.value("SELECT MAX(times_scored) FROM submissions") == 1
        assert tx.value("SELECT COUNT(*) FROM scores") == 8


def test_daily_limit_counts_at_acceptance_and_resets_at_utc_midnight(challenge_template, tmp_path: Path, photos) -> None:
    clock = Clock(1_800_000_000.0 - 1_800_000_000.0 % DAY + DAY - 120)  # two minutes before 00:00 UTC
    folder = tmp_path / "challenge"
    challenge = clone_challenge(challenge_template, folder, clock=clock, daily_limit=2)
    token = challenge.add_team("t")
    auth = {"Authorization": f"Bearer {token}"}
    with ThreadServer(challenge, folder) as server:
        body = archive(tmp_path, server.url, photos, 10.0)
        first, second = upload(server.url, token, body), upload(server.url, token, body)
        assert first.status_code == second.status_code == 202
        # deleting one does not give the day's submission back
        assert httpx.delete(f"{server.url}/api/submissions/{first.json()['id']}", headers=auth).status_code == 200
        third = upload(server.url, token, body)
        assert third.status_code == 429 and "00:00 UTC" in third.json()["detail"] and int(third.headers["Retry-After"]) <= 121
        # a failed scoring does not give it back either
        with challenge.db.transaction() as tx:
            tx.execute("UPDATE submissions SET status = 'failed' WHERE id = ?", (second.json()["id"],))
        assert upload(server.url, token, body).status_code == 429
        assert [s["id"] for s in httpx.get(f"{server.url}/api/submissions", headers=auth).json()["submissions"]] == [second.json()["id"]]
        clock.now += 121  # the next UTC day
        assert upload(server.url, token, body).status_code == 202
        assert upload(server.url, token, body).status_code == 202
        assert upload(server.url, token, body).status_code == 429


def test_refused_uploads_are_rate_limited(challenge_template, tmp_path: Path, photos) -> None:
    folder = tmp_path / "challenge"
    challenge = clone_challenge(challenge_template, folder, max_refusals_per_hour=3)
    token = challenge.add_team("t")
    with ThreadServer(challenge, folder) as server:
        for _ in range(3):
            response = upload(server.url, token, b"not an archive at all")
            assert response.status_code == 400 and "neither a zip nor a tar" in response.json()["detail"].lower()
        good = upload(server.url, token, archive(tmp_path, server.url, photos, 10.0))
        assert good.status_code == 429 and "refused uploads" in good.json()["detail"] and good.headers["Retry-After"]
    assert challenge.queue_counts() == {}  # refusals never count toward the daily limit


def test_concurrent_uploads_respect_the_daily_limit(challenge_template, tmp_path: Path, photos) -> None:
    folder = tmp_path / "challenge"
    challenge = clone_challenge(challenge_template, folder, daily_limit=10)
    tokens = [challenge.add_team("a"), challenge.add_team("b")]
    with ThreadServer(challenge, folder) as server:
        body = archive(tmp_path, server.url, photos, 10.0)
        results: list[httpx.Response] = []
        lock = threading.Lock()

        def send(index: int) -> None:
            response = upload(server.url, tokens[index % 2], body)
            with lock:
                results.append(response)

        threads = [threading.Thread(target=send, args=(i,)) for i in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert sorted(r.status_code for r in results) == [202] * 16
    assert len({r.json()["id"] for r in results}) == 16
    # 16 more from one team at once: exactly its day's remaining 2 are accepted
    with ThreadServer(challenge, folder) as server:
        results.clear()
        threads = [threading.Thread(target=lambda: results.append(upload(server.url, tokens[0], body))) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert sorted(r.status_code for r in results) == [202] * 2 + [429] * 14
    with challenge.db.transaction(write=False) as tx:
        assert tx.value("SELECT COUNT(*) FROM submissions") == 18
        assert tx.value("SELECT MAX(c) FROM (SELECT COUNT(*) AS c FROM submissions GROUP BY team_id) AS per_team") == 10
    assert not [p for p in (folder / "uploads").rglob("*") if p.is_file()]


def test_tokens_are_stored_hashed_and_checked(challenge_template, tmp_path: Path) -> None:
    folder = tmp_path / "challenge"
    challenge = clone_challenge(challenge_template, folder)
    token = challenge.add_team("t")
    with challenge.db.transaction(write=False) as tx:
        stored = tx.value("SELECT secret_sha256 FROM teams WHERE name = 't'")
    assert token.split("_", 2)[2] not in stored and len(stored) == 64
    assert challenge.authenticate("team", token).name == "t"
    for bad in (None, "", token[:-1], token + "a", token.replace("fgt_", "fgj_"), "fgt_999_" + token.split("_", 2)[2],
                "fgt_x_y", "x" * 10_000):
        assert challenge.authenticate("team", bad) is None
    assert challenge_main(["team", "disable", str(folder), "t"]) == 0
    assert challenge.authenticate("team", token) is None
    assert challenge_main(["team", "disable", str(folder), "nobody"]) == 2


def test_a_worker_that_lost_its_lease_records_nothing_and_crashed_jobs_fail_after_max_attempts(
        challenge_template, tmp_path: Path, photos) -> None:
    clock = Clock()
    folder = tmp_path / "challenge"
    challenge = clone_challenge(challenge_template, folder, clock=clock, lease_seconds=60, max_attempts=2)
    team = challenge.authenticate("team", challenge.add_team("t"))
    body = tmp_path / "set.zip"
    body.write_bytes(zip_bytes(write_submission(tmp_path / "set", [{"id": c.id, "caption": c.caption} for c in challenge.captions()],
                                                photos, 10.0)))
    first = challenge.accept(team, body, "set.zip", body.stat().st_size, "0" * 64, 12)
    job = challenge.claim("slow")
    assert job.submission_id == first and challenge.claim("other") is None  # leased: nobody else gets it
    clock.now += 61
    retry = challenge.claim("fast")  # the lease ran out: another worker retries
    assert retry.submission_id == first and retry.attempt == 2
    assert not challenge.extend_lease(first, "slow")
    assert not challenge.finish(first, "slow", {"public": (1.0, {}), "private": (1.0, {})}, 1.0)  # too late
    assert challenge.finish(first, "fast", {"public": (2.0, {}), "private": (3.0, {})}, 1.0)
    assert not challenge.finish(first, "fast", {"public": (2.0, {}), "private": (3.0, {})}, 1.0)  # once
    with challenge.db.transaction(write=False) as tx:
        assert tx.execute("SELECT times_scored, attempts FROM submissions WHERE id = ?", (first,)).one() == (1, 2)
        assert tx.value("SELECT value FROM scores WHERE submission_id = ? AND half = 'public'", (first,)) == 2.0
    # a submission whose worker dies on every attempt is failed after max_attempts, not retried forever
    second = challenge.accept(team, body, "set.zip", body.stat().st_size, "0" * 64, 12)
    for worker in ("w1", "w2"):
        assert challenge.claim(worker).submission_id == second
        clock.now += 61
    assert challenge.claim("w3") is None
    failed = next(s for s in challenge.submissions(team) if s["id"] == second)
    assert failed["status"] == "failed" and "2 times" in failed["message"]
    assert {"score.lease_expired", "score.abandoned"} <= {row["action"] for row in challenge.audit_log()}
    # rescoring queues it again; a worker scores it for real this time
    assert challenge_main(["rescore", str(folder), "--submission", str(second)]) == 0
    assert drain(challenge, folder) == 1
    assert next(s for s in challenge.submissions(team) if s["id"] == second)["status"] == "scored"


@pytest.mark.parametrize("arguments, message", [
    (["init", "{new}", "--captions", "{missing}"], "cannot read"),
    (["init", "{existing}", "--captions", "{source}"], "not an empty folder"),
    (["init", "{new}", "--captions", "{source}", "--metric", "inception_score"], "metric"),
    (["init", "{new}", "--captions", "{source}", "--phase-end", "next tuesday"], "ISO 8601"),
    (["init", "{new}", "--captions", "{source}", "--resolution", "4"], "resolution"),
    (["init", "{new}", "--captions", "{source}", "--db", "postgresql://nobody:x@127.0.0.1:1/none"], "cannot connect"),
    (["team", "add", "{missing}", "x"], "is not a folder"),
    (["team", "add", "{existing}", "x"], "not a challenge folder"),
    (["worker", "postgresql://nobody:x@127.0.0.1:1/none"], "cannot connect"),
    (["export", "{existing}", "out"], "not a challenge folder"),
    (["submit", "http://127.0.0.1:1", "{missing}", "--token", "fgt_1_x"], "not a folder"),
    (["jury", "finalists", "{existing}"], "not a challenge folder"),
    (["no-such-command"], "invalid choice"),
])
def test_bad_command_lines_give_one_line_and_exit_2(tmp_path: Path, challenge_source: Path, capsys, arguments, message) -> None:
    (tmp_path / "existing").mkdir()
    (tmp_path / "existing" / "mine.txt").write_text("a user's file")
    names = {"new": tmp_path / "new", "missing": tmp_path / "missing", "existing": tmp_path / "existing", "source": challenge_source}
    assert challenge_main([a.format(**names) for a in arguments]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert (tmp_path / "existing" / "mine.txt").read_text() == "a user's file" and not (tmp_path / "new").exists()
