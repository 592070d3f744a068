"""The state the challenge server's routes share: the challenge, the folder's scratch space (uploads, the jury's
images), the page templates, and the jury's draw of ballots."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import threading
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, select_autoescape

from ...submission import CaptionItem, image_name
from ...utils import file_inside
from ..archive import ArchiveError, ArchiveLimits, extract_archive
from ..config import METRICS, format_time
from ..layout import archive_limits, layout_problems, summary
from ..refusals import MessagePage
from ..store import Account, Challenge, Refused


class Server:
    """State shared by the endpoints: the challenge, its folder's scratch space, the page templates."""

    def __init__(self, challenge: Challenge, folder: Path) -> None:
        self.challenge, self.folder = challenge, Path(folder)
        self.uploads = self.folder / "uploads" / f"{socket.gethostname()}-{os.getpid()}"  # one per server process
        self.jury_files = self.folder / "jury"
        clear_stale_uploads(self.folder / "uploads")
        self.uploads.mkdir(parents=True, exist_ok=True)
        self.pages = Environment(loader=PackageLoader("fashiongen.challenge", "templates"),
                                 autoescape=select_autoescape(["html"]))
        self.pages.filters["number"] = _number
        self.pages.filters["when"] = lambda text: str(text).replace("T", " ").replace("Z", " UTC") if text else "–"
        self._captions: list[CaptionItem] | None = None
        self.jury_lock = threading.Lock()
        self.rng = np.random.default_rng(secrets.randbits(64))

    @property
    def limits(self) -> ArchiveLimits:
        """What an upload may hold, sized to this challenge (layout.archive_limits)."""
        return archive_limits(self.challenge.config, len(self.captions))

    @property
    def captions(self) -> list[CaptionItem]:
        if self._captions is None:
            self._captions = [CaptionItem(c.id, c.caption, c.attributes) for c in self.challenge.captions()]
        return self._captions

    def page(self, name: str, status: int = 200, **values: Any) -> HTMLResponse:
        config = self.challenge.config
        start, end = self.challenge.phase()
        values = {"title": config.title, "metric": config.metric, "metric_text": METRICS[config.metric][1],
                  "phase_start": format_time(start), "phase_end": format_time(end),
                  "closed": self.challenge.clock() >= end, **values}
        return HTMLResponse(self.pages.get_template(name).render(**values), status_code=status)

    def message_page(self, shown: MessagePage, error: Refused) -> HTMLResponse:
        """A refusal of a page's form as the message page, shown to the account that sent it (refusals.py)."""
        account = shown.account
        return self.page("message.html", status=error.status, message=str(error), juror=account.name if account else "",
                         csrf=shown.csrf if account and account.kind == "juror" else "")

    # ---------------------------------------------------------------- uploads

    def check_archive(self, archive: Path, scratch: Path) -> int:
        """The number of images of an uploaded archive that is a valid submission; ArchiveError or Refused if not."""
        root = extract_archive(archive, scratch, self.limits)
        problems = layout_problems(root, self.captions, self.challenge.config)
        if problems:
            raise Refused(400, f"not a valid submission: {summary(problems)}")
        return len(self.captions) * self.challenge.config.per_caption

    # ---------------------------------------------------------------- the jury

    def draw_ballot(self, juror: Account) -> dict[str, Any] | None:
        """A new ballot for `juror` (Challenge.next_ballot), drawn with the server's generator one at a time."""
        with self.jury_lock:
            return self.challenge.next_ballot(juror, self.rng)

    def ballot_image(self, juror: Account, ballot_id: int, side: str) -> Path | None:
        """The image on one side ('left' or 'right') of one of the juror's ballots; None when there is none to show,
        whatever the reason (the answer is the same 404, so it tells nothing about other ballots or files)."""
        if side not in ("left", "right"):
            return None
        try:
            ballot = self.challenge.ballot(juror, ballot_id)
            path = self.jury_image(ballot[side]["submission"], ballot["caption_id"])
        except (Refused, ArchiveError, ValueError):
            return None
        return path if path.is_file() else None

    def jury_image(self, submission_id: int, caption_id: str) -> Path:
        """A finalist's image of a caption, from its archive extracted once into the folder's jury/ space."""
        target = self.jury_files / str(submission_id)
        with self.jury_lock:
            if not target.is_dir():
                self.jury_files.mkdir(parents=True, exist_ok=True)
                scratch = self.jury_files / f".{submission_id}-{uuid.uuid4().hex}"
                scratch.mkdir()
                try:
                    archive = self.challenge.write_archive(submission_id, scratch / "upload")
                    root = extract_archive(archive, scratch / "files", self.limits)
                    root.rename(target)
                finally:
                    shutil.rmtree(scratch, ignore_errors=True)
        return file_inside(target, image_name(caption_id, 0))


def clear_stale_uploads(uploads: Path) -> None:
    """Remove what dead server processes of this host left half-received (never accepted): several servers may
    share one challenge folder, so a live one's folder is left alone."""
    host = socket.gethostname()
    for folder in uploads.iterdir() if uploads.is_dir() else []:
        name, _, pid = folder.name.rpartition("-")
        if name != host or not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
            alive = int(pid) != os.getpid()  # our own pid: a previous server that had it is gone
        except ProcessLookupError:
            alive = False
        except PermissionError:
            alive = True
        if not alive:
            shutil.rmtree(folder, ignore_errors=True)


def _number(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)
