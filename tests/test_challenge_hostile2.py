"""Issue 33 against a running challenge server (real HTTP on 127.0.0.1, SQLite and PostgreSQL): what used to be a
500 or a silent acceptance is a 4xx with one sentence and the security headers, audited and counted; entries freeze
when the phase closes; exported CSV cannot run formulas; the login forms carry a CSRF token."""

from __future__ import annotations

import csv
import html
import io
import json
import re
import socket
import struct
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from challenge_helpers import Clock, ThreadServer, clone_challenge, source_photos, write_submission
from fashiongen.challenge.layout import upload_cap
from fashiongen.challenge.organiser import csv_text, export_results
from fashiongen.challenge.refusals import SECURITY_HEADERS

BIG_ID = 2**63


@pytest.fixture(scope="module")
def running(challenge_template, tmp_path_factory: pytest.TempPathFactory, challenge_source: Path) -> Iterator[dict]:
    root = tmp_path_factory.mktemp(f"hostile2-{challenge_template.backend}")
    folder = root / "challenge"
    challenge = clone_challenge(challenge_template, folder, max_upload_mb=0, max_refusals_per_hour=10_000)
    tokens = {"a": challenge.add_team("a"), "b": challenge.add_team("b")}
    juror = challenge.add_juror("j")
    with ThreadServer(challenge, folder) as server:
        captions = [json.loads(line) for line in httpx.get(f"{server.url}/api/captions").text.splitlines()]
        valid = write_submission(root / "valid", captions, source_photos(challenge_source), 8.0)
        yield {"url": server.url, "challenge": challenge, "folder": folder, "root": root, "tokens": tokens,
               "juror": juror, "valid": valid, "source": challenge_source}


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def zipped(files: dict[str, bytes], comment: bytes = b"") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for name, data in files.items():
            bundle.writestr(name, data)
        bundle.comment = comment
    return buffer.getvalue()


def refusals_of(challenge, team: str) -> int:
    with challenge.db.transaction(write=False) as tx:
        return tx.value("SELECT COUNT(*) FROM refusals r JOIN teams t ON t.id = r.team_id WHERE t.name = ?", (team,))


def assert_refusal(response: httpx.Response, status: int, fragment: str, folder: Path | None = None) -> str:
    """A refusal as the server gives every one: the status, one sentence (JSON, or a page for a form) naming the rule, the security
    headers, and none of the server's own paths or host name."""
    assert response.status_code == status, response.text
    if response.headers["content-type"].startswith("text/html"):  # a page's form: the message page says it
        detail = html.unescape(re.search(r'<p class="message" id="message">(.*?)</p>', response.text).group(1))
    else:
        detail = response.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and len(detail) < 500, detail
    assert re.search(fragment, detail, flags=re.IGNORECASE), detail
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, name
    assert socket.gethostname() not in detail and "/uploads/" not in detail and (folder is None or str(folder) not in detail)
    return detail


def upload(running: dict, body: bytes, team: str = "a", name: str = "set.zip") -> httpx.Response:
    return httpx.post(f"{running['url']}/api/submissions", params={"name": name}, content=body, timeout=60,
                      headers={"Authorization": f"Bearer {running['tokens'][team]}"})


def login(url: str, kind: str, token: str) -> httpx.Client:
    """A client logged in through the page's form, with the form's CSRF token."""
    client = httpx.Client(base_url=url)
    page = client.get("/team" if kind == "team" else "/jury").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    assert client.post(f"/{'team' if kind == 'team' else 'jury'}/login", data={"token": token, "csrf": csrf}).status_code == 303
    return client


def deep(depth: int) -> str:
    return "[" * depth + "]" * depth


def local_name_changed(body: bytes, old: str, new: str) -> bytes:
    """The zip with one member's local-header name replaced (same length); its central directory still says `old`."""
    at = body.index(old.encode())  # the first: its local header (the directory comes after every member)
    return body[:at] + new.encode() + body[at + len(old):]


def local_size_changed(body: bytes) -> bytes:
    """The zip with its first member's local header declaring one byte more than its central directory."""
    size = struct.unpack_from("<L", body, 22)[0]
    return body[:22] + struct.pack("<L", size + 1) + body[26:]


# ---------------------------------------------------------------- 500s that are refusals now


UPLOADS = [
    ("deep header", lambda f: zipped({**f, "submission.json": deep(100_000).encode()}), 400, "submission.json nests JSON"),
    ("deep lines", lambda f: zipped({**f, "submission.jsonl": (deep(50_000) + "\n").encode() + f["submission.jsonl"]}),
     400, "submission.jsonl nests JSON"),
    ("local name differs", lambda f: local_name_changed(zipped(f), "submission.json", "submission.jsoX"), 400,
     "local header"),
    ("local size differs", lambda f: local_size_changed(zipped(f)), 400, "local header"),
    ("junk prepended", lambda f: b"junk" * 1000 + zipped(f), 400, "prepended"),
    ("junk appended", lambda f: zipped(f) + b"junk" * 1000, 400, "end record"),
    ("comment abuse", lambda f: zipped(f, comment=b"x" * 60_000), 400, "end record|comment"),
    ("junk between members", lambda f: zipped(f).replace(b"PK\x01\x02", b"junk" * 100 + b"PK\x01\x02", 1), 400,
     "belong to no|damaged|between"),
    ("invalid lines file", lambda f: zipped({**f, "submission.jsonl": b"{not json\n"}), 400, "submission.jsonl line 1"),
]


@pytest.mark.parametrize("name, build, status, fragment", UPLOADS, ids=[case[0] for case in UPLOADS])
def test_hostile_uploads_are_refusals_not_500s(running: dict, name: str, build, status: int, fragment: str) -> None:
    challenge = running["challenge"]
    before = refusals_of(challenge, "a")
    response = upload(running, build(files_of(running["valid"])), name=f"{name}.zip")
    assert_refusal(response, status, fragment, running["folder"])
    assert refusals_of(challenge, "a") == before + 1  # counted toward the refusal limit
    assert challenge.audit_log(limit=1)[0]["action"] == "upload.refused"
    assert challenge.queue_counts() == {}


def test_the_valid_set_is_accepted_and_junk_around_it_is_not(running: dict) -> None:
    """The control for the cases above, and the cap: it follows from the challenge's images, not a fixed 256 MB."""
    challenge = running["challenge"]
    cap = upload_cap(challenge.config, 12)
    assert httpx.get(f"{running['url']}/api/challenge").json()["max_upload_bytes"] == cap < 3 * 2**20
    body = zipped(files_of(running["valid"]))
    assert_refusal(upload(running, bytes(cap) + body), 413, "limit")
    accepted = upload(running, body, team="b")
    assert accepted.status_code == 202, accepted.text
    with challenge.db.transaction() as tx:
        tx.execute("DELETE FROM archive_chunks")
        tx.execute("DELETE FROM submissions")


def test_control_characters_and_huge_ids_are_refused_before_the_database(running: dict) -> None:
    url, challenge = running["url"], running["challenge"]
    auth = {"Authorization": f"Bearer {running['tokens']['a']}"}
    before = refusals_of(challenge, "a")
    body = zipped(files_of(running["valid"]))
    assert_refusal(upload(running, body, name="set\x00.zip"), 422, "name: control characters")
    assert_refusal(upload(running, body, name="set\x1b[2J.zip"), 422, "name: control characters")
    for method in (httpx.get, httpx.delete):
        assert_refusal(method(f"{url}/api/submissions/{BIG_ID}", headers=auth), 422, "submission_id: input should be less")
        assert_refusal(method(f"{url}/api/submissions/0", headers=auth), 422, "submission_id")
    assert refusals_of(challenge, "a") == before + 6
    jury = login(url, "juror", running["juror"])
    assert_refusal(jury.get(f"/jury/image/{BIG_ID}/left"), 422, "ballot_id")
    assert_refusal(jury.post("/jury/vote", data={"ballot": str(BIG_ID), "choice": "left", "csrf": "x"}), 422, "ballot")
    assert_refusal(httpx.post(f"{url}/team/login", data={"token": "fgt_99999999999999999999999_x", "csrf": "é"}), 403,
                   "login form")
    assert {"upload.refused", "request.refused"} <= {row["action"] for row in challenge.audit_log(limit=12)}
    assert challenge.queue_counts() == {}


# ---------------------------------------------------------------- login CSRF, the schema


def test_login_forms_need_their_csrf_token(running: dict) -> None:
    url, challenge = running["url"], running["challenge"]
    for kind, path, token in (("team", "/team", running["tokens"]["a"]), ("juror", "/jury", running["juror"])):
        assert_refusal(httpx.post(f"{url}{path}/login", data={"token": token}), 403, "login form expired or came from "
                       "another site")
        client = httpx.Client(base_url=url)
        form = client.get(path).text
        csrf = re.search(r'name="csrf" value="([^"]+)"', form).group(1)
        assert client.cookies.get("fg_login") == csrf
        forged = httpx.post(f"{url}{path}/login", data={"token": token, "csrf": csrf})  # the token without its cookie
        assert_refusal(forged, 403, "login form")
        answer = client.post(f"{path}/login", data={"token": token, "csrf": csrf})
        assert answer.status_code == 303 and client.cookies.get("fg_team" if kind == "team" else "fg_jury")
    assert sum(row["action"].endswith("login_csrf_refused") for row in challenge.audit_log(limit=10)) >= 4


def test_the_schema_lists_each_routes_refusals_and_the_captions_media_type(running: dict) -> None:
    schema = httpx.get(f"{running['url']}/openapi.json").json()["paths"]
    assert {"400", "401", "403", "413", "422", "429", "507"} <= set(schema["/api/submissions"]["post"]["responses"])
    assert {"401", "403", "404", "422"} <= set(schema["/api/submissions/{submission_id}"]["delete"]["responses"])
    assert {"401", "404", "422"} <= set(schema["/api/submissions/{submission_id}"]["get"]["responses"])
    assert "403" in schema["/api/leaderboard/private"]["get"]["responses"]
    assert "application/x-ndjson" in schema["/api/captions"]["get"]["responses"]["200"]["content"]
    assert httpx.get(f"{running['url']}/api/captions").headers["content-type"].startswith("application/x-ndjson")
    assert_refusal(httpx.get(f"{running['url']}/no/such/page"), 404, "not found")


# ---------------------------------------------------------------- integrity and export


def test_entries_freeze_when_the_phase_closes(challenge_template, tmp_path: Path, challenge_source: Path) -> None:
    """After the close a team sees its private scores but cannot delete its way to a better private rank: the
    private board ranks what stood at the close."""
    clock = Clock()
    folder = tmp_path / "challenge"
    challenge = clone_challenge(challenge_template, folder, clock=clock, max_refusals_per_hour=10_000)
    tokens = {"a": challenge.add_team("a"), "b": challenge.add_team("b")}
    with ThreadServer(challenge, folder) as server:
        captions = [json.loads(line) for line in httpx.get(f"{server.url}/api/captions").text.splitlines()]
        body = zipped(files_of(write_submission(tmp_path / "set", captions, source_photos(challenge_source), 8.0)))
        ids = {}
        # (team, public, private): a's best public entry is its worse private one
        for key, (team, public, private) in enumerate([("a", 10.0, 30.0), ("a", 20.0, 5.0), ("b", 15.0, 20.0)]):
            response = httpx.post(f"{server.url}/api/submissions", params={"name": f'=HYPERLINK("http://evil/{key}")'},
                                  content=body, headers={"Authorization": f"Bearer {tokens[team]}"}, timeout=60)
            assert response.status_code == 202, response.text
            ids[key] = response.json()["id"]
            job = challenge.claim("w")
            assert challenge.finish(job.submission_id, "w", {"public": (public, {"fid": public}),
                                                            "private": (private, {"fid": private})}, 1.0)
        clock.now += 10
        challenge.close_phase()
        board = [(row["team"], row["submission"]) for row in challenge.leaderboard("private")]
        assert board == [("b", ids[2]), ("a", ids[0])]
        auth = {"Authorization": f"Bearer {tokens['a']}"}
        mine = httpx.get(f"{server.url}/api/submissions", headers=auth).json()["submissions"]
        assert {s["id"]: s["private"]["value"] for s in mine} == {ids[0]: 30.0, ids[1]: 5.0}  # it can see which is better
        refused = httpx.delete(f"{server.url}/api/submissions/{ids[0]}", headers=auth)
        assert_refusal(refused, 403, "entries are frozen")
        assert [(row["team"], row["submission"]) for row in challenge.leaderboard("private")] == board
        clock.now += 3600  # later closes and clocks do not move the end either
        challenge.close_phase()
        assert [(row["team"], row["submission"]) for row in challenge.leaderboard("private")] == board
        assert any(row["action"] == "request.refused" and "frozen" in row["detail"]["reason"] for row in challenge.audit_log())

    # the export: names a spreadsheet would run as formulas are quoted, read back as text
    export_results(challenge, tmp_path / "results")
    rows = list(csv.DictReader((tmp_path / "results" / "submissions.csv").open(newline="")))
    assert {row["archive"] for row in rows} == {f"'=HYPERLINK(\"http://evil/{key}\")" for key in range(3)}
    assert json.loads((tmp_path / "results" / "submissions.json").read_text())[0]["archive"].startswith("=HYPERLINK")


@pytest.mark.parametrize("cell", ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"])
def test_formula_cells_are_quoted_and_read_back_as_text(cell: str) -> None:
    text = csv_text([{"name": cell, "value": -1.5, "plain": "a=b"}])
    row = next(csv.DictReader(io.StringIO(text, newline="")))
    assert row == {"name": "'" + cell, "value": "-1.5", "plain": "a=b"}
