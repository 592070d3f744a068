"""The challenge's command line: organisers set up and run a challenge, entrants submit to it.

    python -m fashiongen.challenge init DIR --captions SOURCE [--split validation] [--resolution 256] [--db postgresql://...]
    python -m fashiongen.challenge team add|list|disable|enable DIR|URL [NAME]     (a new token is printed once)
    python -m fashiongen.challenge juror add|list|disable|enable DIR|URL [NAME]
    python -m fashiongen.challenge serve DIR [--host 127.0.0.1] [--port 8000]
    python -m fashiongen.challenge worker DIR|URL [--drain] [--device cpu]
    python -m fashiongen.challenge status|rescore|export DIR|URL ...
    python -m fashiongen.challenge phase close DIR|URL
    python -m fashiongen.challenge jury finalists DIR|URL (--top N | --teams A,B,...)
    python -m fashiongen.challenge submit URL SUBMISSION_DIR [--token fgt_... | $FASHIONGEN_TOKEN]

Bad input: one `error: ...` line and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from ..errors import ArgumentParser, UserError, command, input_errors
from ..extras import require
from ..submission import HEADER_FILE, LINES_FILE, validate_submission
from .config import ChallengeConfig
from .organiser import ChallengeSetupError, export_results, init_challenge, open_challenge

logger = logging.getLogger("fashiongen.challenge")


class UploadRefused(UserError):
    """The server answered the upload with a refusal (a 4xx with its one sentence): exit code 1, the server's words."""

    exit_code = 1


def _parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m fashiongen.challenge", description="Host a FashionGen text-to-image challenge.")
    commands = parser.add_subparsers(dest="command", required=True)

    init = commands.add_parser("init", help="create a challenge from a caption source and its hidden photos")
    init.add_argument("dir")
    init.add_argument("--captions", required=True, help="a dataset source: captions and the hidden reference photos")
    init.add_argument("--split", default="validation", help="its split whose photos are hidden (default validation)")
    init.add_argument("--train-split", default="train", help="real photos for FID's real-vs-real floor (default train)")
    init.add_argument("--limit", type=int, help="take the first N captions")
    init.add_argument("--db", help="postgresql://... (default: SQLite inside DIR)")
    init.add_argument("--device", default="cpu")
    defaults = ChallengeConfig()
    for name in ("title", "resolution", "per_caption", "daily_limit", "metric", "phase_start", "phase_end", "split_seed",
                 "critic", "max_upload_mb", "max_refusals_per_hour", "lease_seconds", "max_attempts", "kid_subset_size",
                 "header_timeout_seconds", "min_upload_bytes_per_second", "max_connections_per_client"):
        value = getattr(defaults, name)
        init.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value, help=f"(default {value})")

    for kind in ("team", "juror"):
        accounts = commands.add_parser(kind, help=f"add, list, disable or enable {kind}s")
        accounts.add_argument("action", choices=["add", "list", "disable", "enable"])
        accounts.add_argument("target", help="the challenge folder or database URL")
        accounts.add_argument("name", nargs="?")

    serve = commands.add_parser("serve", help="the HTTP API and pages")
    serve.add_argument("dir")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)

    worker = commands.add_parser("worker", help="score queued submissions (any number of workers, any machines)")
    worker.add_argument("target")
    worker.add_argument("--drain", action="store_true", help="stop when the queue is empty")
    worker.add_argument("--device", default="cpu")
    worker.add_argument("--name", help="the worker's name in leases and the audit log (default host-pid)")
    worker.add_argument("--poll", type=float, default=2.0, help="seconds between looks at an empty queue")

    status = commands.add_parser("status", help="the queue and the leaderboard, as JSON")
    status.add_argument("target")

    rescore = commands.add_parser("rescore", help="queue submissions to be scored again")
    rescore.add_argument("target")
    rescore.add_argument("--submission", type=int, action="append", help="a submission id (repeatable; default all)")

    export = commands.add_parser("export", help="results, leaderboards, jury votes and the audit log as JSON and CSV")
    export.add_argument("target")
    export.add_argument("out")
    export.add_argument("--overwrite", action="store_true")

    phase = commands.add_parser("phase", help="close the phase now: uploads stop, the private leaderboard opens")
    phase.add_argument("action", choices=["close"])
    phase.add_argument("target")

    jury = commands.add_parser("jury", help="choose the finalists the jury compares")
    jury.add_argument("action", choices=["finalists", "ranking"])
    jury.add_argument("target")
    jury.add_argument("--top", type=int)
    jury.add_argument("--teams", help="comma-separated team names")

    submit = commands.add_parser("submit", help="upload a submission folder (entrants)")
    submit.add_argument("url", help="the challenge server, e.g. http://127.0.0.1:8000")
    submit.add_argument("dir", help="a folder written by sample.py --submission")
    submit.add_argument("--token", default=os.environ.get("FASHIONGEN_TOKEN"), help="the team token (or $FASHIONGEN_TOKEN)")
    return parser


def _init(options: argparse.Namespace) -> int:
    names = [f.name for f in ChallengeConfig.__dataclass_fields__.values() if hasattr(options, f.name)]
    config = ChallengeConfig(**{name: getattr(options, name) for name in names},
                             extra={"source": options.captions, "split": options.split, "limit": options.limit})
    counts = init_challenge(options.dir, options.captions, options.split, config, database=options.db, limit=options.limit,
                            train_split=options.train_split, device=options.device)
    print(json.dumps({"challenge": options.dir, "halves": counts}, indent=1, default=float))
    return 0


def _accounts(options: argparse.Namespace) -> int:
    challenge, _ = open_challenge(options.target)
    if options.action == "list":
        print(json.dumps(challenge.accounts(options.command), indent=1))
        return 0
    if not options.name:
        raise ChallengeSetupError(f"{options.command} {options.action} needs a NAME")
    if options.action == "add":
        token = challenge.add_team(options.name) if options.command == "team" else challenge.add_juror(options.name)
        print(token)
        print(f"{options.command} {options.name!r} added; the token above is shown only this once", file=sys.stderr)
    else:
        challenge.set_disabled(options.command, options.name, options.action == "disable")
    return 0


def _zip_folder(folder: Path, archive: Path) -> None:
    """The header, the lines file and the images they list (nothing else a folder may hold)."""
    listed = [json.loads(line)["file"] for line in (folder / LINES_FILE).read_text(encoding="utf-8").splitlines() if line.strip()]
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as bundle:  # PNGs are compressed already
        for name in (HEADER_FILE, LINES_FILE, *listed):
            bundle.write(folder / name, name)


def _submit(options: argparse.Namespace) -> int:
    folder = Path(options.dir)
    if not options.token:
        raise ChallengeSetupError("a team token is needed: --token fgt_... or $FASHIONGEN_TOKEN")
    if not folder.is_dir():
        raise ChallengeSetupError(f"{folder} is not a folder")
    problems = validate_submission(folder)
    if problems:
        raise ChallengeSetupError(f"{folder} is not a valid submission: {problems[0]}"
                                  + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
    with tempfile.TemporaryDirectory() as scratch:
        archive = Path(scratch) / "submission.zip"
        _zip_folder(folder, archive)
        url = options.url.rstrip("/") + "/api/submissions?name=" + urllib.request.quote(folder.name + ".zip")
        with archive.open("rb") as body:
            request = urllib.request.Request(url, data=body, method="POST", headers={
                "Authorization": f"Bearer {options.token}", "Content-Type": "application/zip",
                "Content-Length": str(archive.stat().st_size)})
            try:
                with urllib.request.urlopen(request, timeout=600) as response:
                    print(response.read().decode("utf-8"))
                    return 0
            except urllib.error.HTTPError as error:
                detail = error.read().decode("utf-8", "replace")
                try:
                    detail = json.loads(detail)["detail"]
                except (ValueError, KeyError, TypeError):
                    pass
                raise UploadRefused(f"the server refused the upload ({error.code}): {detail}") from None
            except urllib.error.URLError as error:
                raise ChallengeSetupError(f"cannot reach {options.url}: {error.reason}") from None


@command(input_errors(OSError))
def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    options = _parser().parse_args(argv)
    name = options.command
    if name == "init":
        return _init(options)
    if name in ("team", "juror"):
        return _accounts(options)
    if name == "submit":
        return _submit(options)
    if name == "serve":
        require("fastapi", "challenge", "the challenge server")
        uvicorn = require("uvicorn", "challenge", "the challenge server")

        from .connections import server_config
        from .server import create_app

        challenge, folder = open_challenge(options.dir)
        app = create_app(challenge, folder)
        uvicorn.Server(server_config(app, challenge.config, options.host, options.port, log_level="info")).run()
        return 0
    challenge, folder = open_challenge(options.target)
    if name == "worker":
        from .worker import Worker

        work_dir = folder / "work" if folder else Path(tempfile.mkdtemp(prefix="fashiongen-worker-"))
        worker = Worker(challenge, work_dir, name=options.name, device=options.device, poll_seconds=options.poll)
        worker.handle_signals()
        count = worker.run(drain=options.drain)
        print(json.dumps({"worker": worker.name, "finished": count, "queue": challenge.queue_counts()}))
    elif name == "status":
        print(json.dumps({"queue": challenge.queue_counts(), "closed": challenge.phase_closed(),
                          "leaderboard": challenge.leaderboard("public")}, indent=1, default=float))
    elif name == "rescore":
        print(f"{challenge.requeue(options.submission)} submission(s) queued for scoring")
    elif name == "export":
        for path in export_results(challenge, options.out, overwrite=options.overwrite):
            print(path)
    elif name == "phase":
        from .config import format_time

        print(f"phase closed at {format_time(challenge.close_phase())}")
    elif name == "jury":
        if options.action == "ranking":
            print(json.dumps(challenge.jury_ranking(), indent=1))
        else:
            if bool(options.top) == bool(options.teams):
                raise ChallengeSetupError("jury finalists needs --top N or --teams A,B (one of them)")
            teams = [team.strip() for team in (options.teams or "").split(",") if team.strip()]
            print("finalists: " + ", ".join(challenge.set_finalists(options.top, teams)))
    return 0

if __name__ == "__main__":
    sys.exit(main())
