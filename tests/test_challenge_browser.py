"""The challenge server's pages in a real browser: Debian's headless Chromium driven by playwright reads the public
and private leaderboards, logs a team in and out through the form, and votes as a juror by clicking images, over
real HTTP on 127.0.0.1 (SQLite backend). Every page must carry its Content-Security-Policy, load nothing from
elsewhere and break none of it (no console errors). CI installs chromium (.ci/run); elsewhere the file is skipped
when /usr/bin/chromium is missing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from challenge_helpers import Clock, ThreadServer, clone_challenge, make_template, source_photos, write_submission, zip_bytes
from fashiongen.challenge.store import Challenge
from fashiongen.challenge.worker import Worker

from browser_helpers import CHROMIUM, FLAGS, require_chromium

require_chromium()

from playwright.sync_api import Browser, Page, Response, sync_playwright  # noqa: E402

pytestmark = pytest.mark.slow  # drives headless Chromium against a served challenge (the full run only)

NOISE = {"good": 4.0, "fair": 30.0, "poor": 90.0}  # more noise, higher FID: the leaderboard's order
TIMEOUT = 20_000  # ms
NOON = 1_800_000_000 - 1_800_000_000 % 86400 + 43200  # 2027-01-15 12:00 UTC


@dataclass
class Site:
    """A scored challenge served on 127.0.0.1: three teams, one scored submission each, plus a queued one of "good"."""

    challenge: Challenge
    folder: Path
    url: str
    tokens: dict[str, str]
    ids: dict[str, list[int]] = field(default_factory=dict)


def upload(url: str, token: str, body: bytes, name: str) -> int:
    response = httpx.post(f"{url}/api/submissions", params={"name": name}, content=body,
                          headers={"Authorization": f"Bearer {token}"}, timeout=120)
    assert response.status_code == 202, response.text
    return response.json()["id"]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, challenge_source: Path) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("challenge-browser")
    template = make_template("sqlite", root, challenge_source)
    folder = root / "challenge"
    challenge = clone_challenge(template, folder, clock=Clock(NOON))  # "today" cannot change under the test
    tokens = {name: challenge.add_team(name) for name in NOISE}
    photos = source_photos(challenge_source)
    with ThreadServer(challenge, folder) as server:
        captions = [json.loads(line) for line in httpx.get(f"{server.url}/api/captions").text.splitlines()]
        made = Site(challenge, folder, server.url, tokens, {name: [] for name in NOISE})
        for name, noise in NOISE.items():
            body = zip_bytes(write_submission(root / f"set-{name}", captions, photos, noise))
            made.ids[name].append(upload(server.url, tokens[name], body, f"{name}-first.zip"))
        assert Worker(challenge, folder / "work", name="browser-test", poll_seconds=0.1).run(drain=True) == 3
        body = zip_bytes(write_submission(root / "set-good-2", captions, photos, 8.0, seed=1))
        made.ids["good"].append(upload(server.url, tokens["good"], body, "good-second.zip"))  # left queued
        yield made


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        yield launched
        launched.close()


@dataclass
class Watched:
    page: Page
    requests: list[str] = field(default_factory=list)
    responses: list[Response] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@pytest.fixture()
def watched(browser: Browser, site: Site) -> Iterator[Watched]:
    """A page of a fresh context (no cookies) that records every request, document response and console error; after
    the test: nothing was fetched from anywhere but the server, every page had its CSP, and the console stayed clean."""
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    context.set_default_timeout(TIMEOUT)
    page = context.new_page()
    seen = Watched(page)
    page.on("request", lambda request: seen.requests.append(request.url))
    page.on("response", lambda response: seen.responses.append(response)
            if response.request.resource_type == "document" else None)
    page.on("console", lambda message: seen.errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: seen.errors.append(str(error)))
    yield seen
    context.close()
    assert seen.requests and seen.responses
    outside = [url for url in seen.requests if not url.startswith(site.url + "/")]
    assert not outside, f"the pages fetched from elsewhere: {outside}"
    for response in seen.responses:
        policy = response.headers.get("content-security-policy", "")
        assert "default-src 'none'" in policy and "form-action 'self'" in policy, (response.url, policy)
        assert response.headers.get("x-frame-options") == "DENY"
    # a 401/403 document (wrong token, closed leaderboard) is reported as a failed load; anything else is a bug
    unexpected = [text for text in seen.errors if "status of 40" not in text]
    assert not unexpected, f"console errors: {unexpected}"


def go(page: Page, url: str) -> Response:
    response = page.goto(url, wait_until="load")
    assert response is not None
    return response


def board(page: Page) -> list[list[str]]:
    """The leaderboard table's body as cell texts, row by row."""
    return page.locator("#leaderboard tbody tr").evaluate_all(
        "rows => rows.map(row => [...row.cells].map(cell => cell.innerText.trim()))")


@contextmanager
def closed_phase(challenge: Challenge) -> Iterator[None]:
    """The phase closed for a while, then open again (the file's tests may run in any order)."""
    challenge.close_phase()
    try:
        yield
    finally:
        with challenge.db.transaction() as tx:
            tx.execute("DELETE FROM meta WHERE key = 'phase_end'")
        assert not challenge.phase_closed()


def test_leaderboards_public_then_private_once_closed(site: Site, watched: Watched) -> None:
    page = watched.page
    assert go(page, site.url + "/").status == 200
    assert page.locator("h2").inner_text() == "Public leaderboard"
    headers = page.locator("#leaderboard thead th").all_inner_texts()
    assert headers[:3] == ["#", "Team", "FID ↓"] and not any("private" in h.lower() for h in headers)
    rows = board(page)
    assert rows[0][1] == "real photos" and page.locator("#leaderboard tr.real").count() == 1
    teams = rows[1:]
    assert [row[1] for row in teams] == ["good", "fair", "poor"]  # less noise, lower FID, higher place
    assert [row[0] for row in teams] == ["1", "2", "3"]
    fids = [float(row[2]) for row in teams]
    assert fids == sorted(fids) and fids[0] < fids[-1] and float(rows[0][2]) >= 0
    entries = headers.index("Entries")
    assert [row[entries] for row in teams] == ["2", "1", "1"]  # entries: "good"'s queued one counts
    assert page.locator("header nav").inner_text().count("Private") == 0  # no link to it while the phase is open
    api = httpx.get(f"{site.url}/api/leaderboard").json()["rows"]
    assert [row["team"] for row in api] == ["good", "fair", "poor"]

    refused = go(page, site.url + "/leaderboard/private")
    assert refused.status == 403 and page.locator("#leaderboard").count() == 0
    assert "opens when the phase closes" in page.locator("#message").inner_text()

    with closed_phase(site.challenge):
        assert go(page, site.url + "/").status == 200
        page.locator("header nav a", has_text="Private leaderboard").click()
        page.wait_for_url(site.url + "/leaderboard/private")
        assert page.locator("h2").inner_text() == "Private leaderboard"
        assert "closed" in page.locator(".phase").inner_text()
        rows = board(page)
        assert rows[0][1] == "real photos" and {row[1] for row in rows[1:]} == set(NOISE)
        assert all(float(row[2]) >= 0 for row in rows)


def test_team_page_login_own_submissions_wrong_token_logout(site: Site, watched: Watched) -> None:
    page = watched.page
    go(page, site.url + "/team")
    assert page.locator("h2").inner_text() == "Team login" and page.locator("#submissions").count() == 0

    page.locator("input[name=token]").fill(site.tokens["fair"] + "x")
    with page.expect_navigation() as wrong:
        page.locator("button[type=submit]").click()
    assert wrong.value is not None and wrong.value.status == 401
    assert page.locator(".error").inner_text() == "That token is not valid."
    assert [c["name"] for c in page.context.cookies()] == ["fg_login"]  # the login form's CSRF cookie, no session

    page.locator("input[name=token]").fill(site.tokens["good"])
    page.locator("button[type=submit]", has_text="Log in").click()
    page.locator("#submissions").wait_for()
    assert page.url == site.url + "/team" and page.locator("h2").inner_text() == "Team good"
    assert "Submissions today: 2 of 5" in page.locator("main").inner_text()
    rows = page.locator("#submissions tbody tr").evaluate_all(
        "rows => rows.map(row => [...row.cells].map(cell => cell.innerText.trim()))")
    assert [int(row[0]) for row in rows] == sorted(site.ids["good"], reverse=True)  # its own, newest first
    assert [row[2] for row in rows] == ["good-second.zip", "good-first.zip"]
    assert [row[3] for row in rows] == ["queued", "scored"] and float(rows[1][4]) >= 0
    text = page.locator("main").inner_text()
    assert "fair-first" not in text and "poor-first" not in text
    cookie = next(c for c in page.context.cookies() if c["name"] == "fg_team")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["value"] != site.tokens["good"]

    page.locator("button", has_text="Log out").click()
    page.locator("h2", has_text="Team login").wait_for()
    assert page.url == site.url + "/team" and not [c for c in page.context.cookies() if c["name"] == "fg_team"]
    page.context.add_cookies([cookie])  # the old cookie was ended on the server, not just forgotten by the browser
    go(page, site.url + "/team")
    assert page.locator("h2").inner_text() == "Team login" and page.locator("#submissions").count() == 0


def loaded_images(page: Page) -> list[int]:
    page.wait_for_function("() => [...document.querySelectorAll('.pair img')].every(i => i.complete)")
    return page.locator(".pair img").evaluate_all("images => images.map(i => i.naturalWidth)")


def test_jury_votes_by_clicking_until_every_comparison_is_done(site: Site, watched: Watched) -> None:
    challenge, page = site.challenge, watched.page
    with closed_phase(challenge):
        assert challenge.set_finalists(top=2) == ["good", "fair"]
    token = challenge.add_juror("ada")
    go(page, site.url + "/jury")
    assert page.locator("h2").inner_text() == "Jury login"
    page.locator("input[name=token]").fill(token)
    page.locator("button[type=submit]", has_text="Log in").click()
    page.locator("#vote").wait_for()
    assert page.locator("h2").inner_text() == "Jury · ada"
    assert "good" not in page.locator("main").inner_text() and "fair" not in page.locator("main").inner_text()

    captions = {c.id: c.caption for c in challenge.captions()}
    resolution = challenge.config.resolution
    seen: set[str] = set()
    clicks = []
    while page.locator("#vote").count():
        ballot = page.locator("#vote input[name=ballot]").get_attribute("value")
        caption = page.locator("#caption").inner_text().strip("“”")
        assert caption in captions.values() and ballot not in seen
        seen.add(ballot)
        assert loaded_images(page) == [resolution, resolution]  # both images arrived and decoded
        side = "left" if len(clicks) % 3 else "right"
        with page.expect_navigation():
            page.locator(f"#{side}").click()
        clicks.append(side)
        votes = challenge.votes()
        assert len(votes) == len(clicks)  # recorded at once
        last = votes[-1]
        assert last["juror"] == "ada" and captions[last["caption_id"]] == caption
        assert (last["winner"] == last["left"]) == (side == "left")
        assert len(clicks) <= len(captions), "the jury page kept drawing ballots"
    assert len(clicks) == len(captions)  # one comparison per caption for one pair of finalists
    assert "you have voted on every comparison" in page.locator("#message").inner_text()
    votes = challenge.votes()
    assert len({v["caption_id"] for v in votes}) == len(captions)
    assert all(sorted(v["teams"]) == ["fair", "good"] for v in votes)
    assert sum(r["wins"] for r in challenge.jury_ranking(bootstrap=50)) == len(captions)
    # the images are the juror's only: another browser gets nothing
    ballot_url = f"{site.url}/jury/image/{sorted(seen, key=int)[-1]}/left"
    assert httpx.get(ballot_url).status_code == 404

    page.locator("button", has_text="Log out").click()
    page.locator("h2", has_text="Jury login").wait_for()
