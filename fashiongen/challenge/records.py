"""What every part of the challenge server shares: a refusal, an account, and a refused archive."""

from __future__ import annotations

from dataclasses import dataclass
from ..errors import UserError


class Refused(UserError, ValueError):
    """A request the challenge turns down: an HTTP status and one sentence saying why."""

    def __init__(self, status: int, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status, self.retry_after = status, retry_after


@dataclass(frozen=True)
class Account:
    id: int
    name: str
    kind: str  # team | juror


class ArchiveError(ValueError):
    """An upload refused; the message names the member (or the archive) and the rule."""


class UploadTooLarge(ArchiveError):
    """An upload over its byte limit (HTTP 413)."""
