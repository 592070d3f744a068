"""A scoring worker: claims the oldest queued submission with a lease, keeps the lease alive while it scores, and
records the scores in the transaction that marks the job done. A worker killed mid-job leaves its lease to run out;
the next worker to claim retries the job (up to config.max_attempts), so every accepted submission is scored once.

    python -m fashiongen.challenge worker CHALLENGE_DIR|postgresql://...   [--drain] [--device cuda]

Any number of workers, on any number of machines, may share one queue: SQLite's write lock (one machine) or
PostgreSQL's `FOR UPDATE SKIP LOCKED` (many) hands each job to one of them.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import threading
import time
from pathlib import Path

from ..evaluation.images import EvaluationInputError
from ..submission import CaptionItem
from .archive import ArchiveError, extract_archive
from .layout import archive_limits, layout_problems, summary
from .scoring import Scorer, ScoringError
from .store import Challenge, Job

logger = logging.getLogger(__name__)


def worker_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class _Lease(threading.Thread):
    """Extends a job's lease every third of its length; `lost` is set when another worker has taken the job."""

    def __init__(self, challenge: Challenge, job: Job, name: str) -> None:
        super().__init__(daemon=True)
        self.challenge, self.job, self.name_ = challenge, job, name
        self.stopped, self.lost = threading.Event(), False

    def run(self) -> None:
        while not self.stopped.wait(self.challenge.config.lease_seconds / 3):
            try:
                if not self.challenge.extend_lease(self.job.submission_id, self.name_):
                    self.lost = True
                    return
            except Exception as error:  # a database hiccup: try again at the next beat
                logger.warning("could not extend the lease of submission %d: %s", self.job.submission_id, error)
        self.challenge.db.close()


class Worker:
    """Scores jobs until stopped (SIGTERM/SIGINT finish the job in hand first) or, with `drain`, until no job is queued
    or being scored (a job another worker holds may come back when its lease runs out)."""

    def __init__(self, challenge: Challenge, work_dir: Path, name: str | None = None, device: str = "cpu",
                 poll_seconds: float = 2.0) -> None:
        self.challenge, self.work_dir, self.device, self.poll_seconds = challenge, Path(work_dir), device, poll_seconds
        self.name = name or worker_name()
        self.stop = threading.Event()
        self._scorer: Scorer | None = None
        self._captions: list[CaptionItem] | None = None

    @property
    def scorer(self) -> Scorer:
        if self._scorer is None:
            self._scorer = Scorer(self.challenge, self.device)
        return self._scorer

    def run(self, drain: bool = False) -> int:
        """Score jobs; returns how many were finished (scored or failed) by this worker."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        done = 0
        while not self.stop.is_set():
            job = self.challenge.claim(self.name)
            if job is None:
                counts = self.challenge.queue_counts() if drain else {}
                if drain and not counts.get("queued") and not counts.get("scoring"):
                    break  # nothing waits, and no other worker's job may come back to the queue
                self.stop.wait(self.poll_seconds)
                continue
            try:
                done += self.score(job)
            except Exception:  # not the submission's fault as far as we know: let it be retried (config.max_attempts)
                logger.exception("scoring submission %d broke; it will be retried", job.submission_id)
                self.challenge.release(job.submission_id, self.name)
                self.stop.wait(self.poll_seconds)
        return done

    def score(self, job: Job) -> bool:
        """Score one claimed job; True when its outcome was recorded (False: the lease was lost to another worker)."""
        started = time.monotonic()
        logger.info("scoring submission %d of %s (attempt %d)", job.submission_id, job.team, job.attempt)
        lease = _Lease(self.challenge, job, self.name)
        lease.start()
        scratch = self.work_dir / f"job-{job.submission_id}-{self.name}"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        try:
            archive = self.challenge.write_archive(job.submission_id, scratch / "upload")
            if self._captions is None:
                self._captions = [CaptionItem(c.id, c.caption, c.attributes) for c in self.challenge.captions()]
            root = extract_archive(archive, scratch / "files", archive_limits(self.challenge.config, len(self._captions)))
            problems = layout_problems(root, self._captions, self.challenge.config)
            if problems:
                raise ScoringError(summary(problems))
            scores = self.scorer.score(root)
        except (ScoringError, ArchiveError, EvaluationInputError) as error:
            recorded = not lease.lost and self.challenge.fail(job.submission_id, self.name, str(error))
            logger.warning("submission %d failed: %s", job.submission_id, error)
            return recorded
        finally:
            lease.stopped.set()
            shutil.rmtree(scratch, ignore_errors=True)
        seconds = time.monotonic() - started
        recorded = not lease.lost and self.challenge.finish(job.submission_id, self.name, scores, seconds)
        if recorded:
            values = ", ".join(f"{half} {value:.4g}" if value is not None else f"{half} -" for half, (value, _) in scores.items())
            logger.info("submission %d scored in %.1f s: %s %s", job.submission_id, seconds, self.challenge.config.metric, values)
        else:
            logger.warning("submission %d: lease lost to another worker; its result is theirs to record", job.submission_id)
        return recorded

    def handle_signals(self) -> None:
        for number in (signal.SIGTERM, signal.SIGINT):
            signal.signal(number, lambda *_: self.stop.set())
