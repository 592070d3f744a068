"""Setting a challenge up, finding it again, and exporting its results.

    init_challenge("my-challenge/", "../shared/data/fashion-products", "validation", ChallengeConfig(resolution=256))
    challenge, folder = open_challenge("my-challenge/")          # or open_challenge("postgresql://...")
    export_results(challenge, "results/")                         # JSON + CSV: submissions, leaderboards, jury, audit

A challenge folder holds database.json (where its database is; mode 0600, since a PostgreSQL URL may carry a
password), challenge.yaml (its settings, for people; the database holds the copy that counts), the SQLite database
(the default) and the server's scratch space. `init` refuses a folder or database that already holds anything.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from ..utils import atomic_write_text
from .config import ChallengeConfig
from .db import Database, DatabaseError, is_url
from .store import Challenge
from ..errors import UserError

LOCATOR_FILE = "database.json"
CONFIG_FILE = "challenge.yaml"
SQLITE_FILE = "challenge.sqlite3"


class ChallengeSetupError(UserError, ValueError):
    """A challenge folder or database that cannot be created or opened; the message names it."""


def _database_of(folder: Path) -> Database:
    locator = folder / LOCATOR_FILE
    try:
        where = json.loads(locator.read_text(encoding="utf-8"))["database"]
    except FileNotFoundError:
        raise ChallengeSetupError(f"{folder} is not a challenge folder (no {LOCATOR_FILE}); create one with "
                                  "`python -m fashiongen.challenge init`") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise ChallengeSetupError(f"{locator}: not readable ({error})") from None
    if not isinstance(where, str):
        raise ChallengeSetupError(f"{locator}: \"database\" must be a path or a postgresql:// URL")
    return Database(where if is_url(where) else folder / where)


def open_challenge(target: str | Path, clock: Callable[[], float] = time.time) -> tuple[Challenge, Path | None]:
    """The challenge in a folder or at a database URL, and its folder (None for a bare URL)."""
    target = str(target)
    folder = None if is_url(target) else Path(target)
    if folder is not None and not folder.is_dir():
        raise ChallengeSetupError(f"{folder} is not a folder")
    db = Database(target) if folder is None else _database_of(folder)
    try:
        db.check_schema()
    except DatabaseError as error:
        raise ChallengeSetupError(str(error)) from None
    return Challenge(db, clock), folder


def init_challenge(folder: str | Path, source: str, split: str, config: ChallengeConfig, database: str | None = None,
                   limit: int | None = None, train_split: str = "train", device: str = "cpu",
                   show_progress: bool = True) -> dict[str, Any]:
    """Create a challenge: its folder, database, settings and the hidden photos' statistics. Nothing is overwritten."""
    from .scoring import write_reference  # torch and the evaluation networks: only init and workers need them

    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ChallengeSetupError(f"{folder} exists and is not an empty folder; a challenge is created in a new one")
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        db = Database(database if database else folder / SQLITE_FILE)
        if db.kind == "postgresql":
            try:
                db.check_schema()
            except DatabaseError:
                pass
            else:
                raise ChallengeSetupError(f"{db.describe()} already holds a challenge; use an empty database")
        db.create_schema()
        challenge = Challenge(db)
        with db.transaction() as tx:
            challenge.write_config(config, tx)
        counts = write_reference(challenge, source, split, limit=limit, train_split=train_split, device=device,
                                 show_progress=show_progress)
        locator = folder / LOCATOR_FILE
        atomic_write_text(locator, json.dumps({"database": database or SQLITE_FILE}) + "\n")
        os.chmod(locator, 0o600)
        atomic_write_text(folder / CONFIG_FILE, "# written by `init`; the database holds the copy that counts\n"
                          + yaml.safe_dump(challenge.config.to_dict(), sort_keys=False))
        db.close()
        return counts
    except BaseException:
        if created:
            shutil.rmtree(folder, ignore_errors=True)
        raise


# ---------------------------------------------------------------- export


def _flat(row: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = json.dumps(value) if isinstance(value, list) else value
    return out


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet reads as a formula (OWASP's CSV injection)


def spreadsheet_safe(value: Any) -> Any:
    """A text cell a spreadsheet would run as a formula, prefixed with a quote; numbers and other text unchanged."""
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value


def csv_text(rows: list[dict[str, Any]]) -> str:
    """Rows as CSV, nested values flattened to dotted columns, formula-like text quoted."""
    flat = [{key: spreadsheet_safe(value) for key, value in _flat(row).items()} for row in rows]
    columns = list(dict.fromkeys(key for row in flat for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, lineterminator="\r\n")  # RFC 4180: a CR or LF in a cell is quoted
    writer.writeheader()
    writer.writerows(flat)
    return buffer.getvalue()


def export_results(challenge: Challenge, out_dir: str | Path, overwrite: bool = False) -> list[Path]:
    """Submissions (all, with private scores once closed), leaderboards, jury votes and ranking, and the audit log,
    as JSON and CSV. Existing files are kept unless `overwrite`."""
    out_dir = Path(out_dir)
    tables: dict[str, list[dict[str, Any]]] = {"submissions": challenge.submissions(include_deleted=True),
                                               "leaderboard_public": challenge.leaderboard("public")}
    if challenge.phase_closed():
        tables["leaderboard_private"] = challenge.leaderboard("private")
    if challenge.finalists():
        tables["jury_votes"] = challenge.votes()
        tables["jury_ranking"] = challenge.jury_ranking()
    files = {f"{name}.{kind}": (json.dumps(rows, indent=1, default=float) + "\n" if kind == "json" else csv_text(rows))
             for name, rows in tables.items() for kind in ("json", "csv")}
    files["audit.jsonl"] = "".join(json.dumps(row) + "\n" for row in challenge.audit_log())
    existing = [name for name in files if (out_dir / name).exists()]
    if existing and not overwrite:
        raise ChallengeSetupError(f"{out_dir} already holds {', '.join(existing)}; pass --overwrite to replace them")
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        atomic_write_text(out_dir / name, text)
    challenge.log_event("organiser", "export", files=sorted(files))
    return [out_dir / name for name in files]
