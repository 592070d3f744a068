"""A challenge's settings: one dataclass holds every default; `init` writes it into the database (so a worker that has
only the database URL knows it) and beside it as challenge.yaml for people to read.

Phases: uploads are accepted from `phase_start` until `phase_end` (UTC, ISO 8601); after the end the private
leaderboard opens. `python -m fashiongen.challenge phase close` ends the phase now.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field
from typing import Any
from ..errors import UserError


# name -> (higher is better, what it is)
METRICS = {
    "fid": (False, "FID against the hidden photos (lower is better)"),
    "kid": (False, "KID x1000 against the hidden photos (lower is better)"),
    "critic_score": (True, "the critic's image-caption agreement (higher is better)"),
    "r_precision": (True, "R-precision: the caption found among 99 others by the critic (higher is better)"),
}


class ChallengeConfigError(UserError, ValueError):
    """A setting out of range or of the wrong kind; the message names it."""


def parse_time(text: str, name: str) -> float:
    """Epoch seconds of an ISO 8601 date or time (UTC unless it names a zone)."""
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (TypeError, ValueError):
        raise ChallengeConfigError(f"{name}: {text!r} is not an ISO 8601 date or time (e.g. 2027-01-31T23:59:59Z)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return moment.timestamp()


def format_time(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def utc_day(seconds: float) -> str:
    """The UTC day a moment falls in: daily limits reset at 00:00 UTC."""
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).strftime("%Y-%m-%d")


@dataclass
class ChallengeConfig:
    """What a challenge asks for and how it scores."""

    title: str = "FashionGen text-to-image challenge"
    resolution: int = 256  # submitted images are resolution x resolution RGB PNGs
    per_caption: int = 1  # images per caption
    daily_limit: int = 5  # accepted submissions per team per UTC day
    metric: str = "fid"  # the leaderboard's order (METRICS)
    phase_start: str = "2000-01-01T00:00:00Z"
    phase_end: str = "2100-01-01T00:00:00Z"
    split_seed: int = 0  # public/private halves of the captions
    public_fraction: float = 0.5
    critic: str = ""  # a saved critic's folder for the critic score, R-precision and attribute accuracy; "": the bundled
    # one, wherever each worker's installation keeps it (its checksum, below, must still match)
    critic_sha256: str = ""  # filled at init: workers refuse another critic
    kid_subset_size: int = 1000
    max_upload_mb: int = 0  # 0: the cap follows from the challenge (layout.upload_cap: every image an uncompressed PNG);
    # a positive value caps lower (a 474-caption set of 4 images at 256 px is ~80 MB, ~510 MB uncompressed)
    max_refusals_per_hour: int = 10  # refused uploads a team may make in an hour before it must wait
    lease_seconds: int = 600  # a worker's claim on a job; a crashed worker's job is retried after it expires
    max_attempts: int = 3  # scoring attempts (crashed workers included) before a submission is marked failed
    session_hours: int = 12  # login cookies of the team and jury pages
    header_timeout_seconds: int = 10  # a request's headers (a few hundred bytes) must arrive within this
    min_upload_bytes_per_second: int = 32 * 2**10  # a body slower than this over header_timeout_seconds is cut off
    # (an 80 MB set needs 42 min at this rate)
    max_connections_per_client: int = 16  # open connections from one address (a browser opens ~6)
    extra: dict[str, Any] = field(default_factory=dict)  # the source, split and counts `init` read, for the record

    def __post_init__(self) -> None:
        for name, low, high in (("resolution", 16, 1024), ("per_caption", 1, 64), ("daily_limit", 1, 1000),
                                ("kid_subset_size", 2, 100_000), ("max_upload_mb", 0, 100_000),
                                ("max_refusals_per_hour", 1, 100_000), ("lease_seconds", 5, 86_400),
                                ("max_attempts", 1, 100), ("session_hours", 1, 24 * 365),
                                ("header_timeout_seconds", 1, 3600), ("min_upload_bytes_per_second", 1, 2**30),
                                ("max_connections_per_client", 1, 10_000)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ChallengeConfigError(f"{name}: {value!r} is not an integer in [{low}, {high}]")
        if self.metric not in METRICS:
            raise ChallengeConfigError(f"metric: {self.metric!r} is not one of {', '.join(METRICS)}")
        if not 0.0 < self.public_fraction < 1.0:
            raise ChallengeConfigError(f"public_fraction: {self.public_fraction} is not between 0 and 1")
        if parse_time(self.phase_end, "phase_end") <= parse_time(self.phase_start, "phase_start"):
            raise ChallengeConfigError(f"phase_end {self.phase_end} is not after phase_start {self.phase_start}")

    @property
    def higher_is_better(self) -> bool:
        return METRICS[self.metric][0]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ChallengeConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ChallengeConfigError(f"unknown challenge setting(s): {', '.join(unknown)}")
        return cls(**values)
