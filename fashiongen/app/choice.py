"""Which loaded model the page opens on: the best images on the validation captions, not the fastest.

A published model's card records its headline scores (model.json "metrics", from evaluate.py's report.json through
`python -m fashiongen.release --report`). The page opens on the lowest FID, ties broken by the higher R-precision;
models without recorded scores follow, in the order given. A few-step student takes its teacher's place once it is
within 10% of its teacher on FID, R-precision and colour accuracy (nearly the same designs, many times faster); until
then it is offered right after its teacher, as the fast choice (issue 36: the first designs a designer sees were the
weakest we shipped).

    pipelines = best_first({"student": student, "diffusion": teacher, "gan": gan})   # -> diffusion, gan, student
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

STUDENT_TOLERANCE = 0.10  # a student leads only within 10% of its teacher on each score
FID_KEY, R_PRECISION_KEY, COLOUR_KEY = "FID", "R-precision (1 of 100)", "colour accuracy"
_NUMBER = re.compile(r"^\s*([-+]?\d+(?:\.\d+)?)")


class Scored(Protocol):
    """What the choice reads of a loaded pipeline: its base model's family, model.json and weights checksum."""

    @property
    def stages(self) -> list[Any]: ...


P = TypeVar("P", bound=Scored)


@dataclass(frozen=True)
class Quality:
    """A model's headline scores as its card records them; None where it records none."""

    fid: float | None = None
    r_precision: float | None = None
    colour_accuracy: float | None = None

    @property
    def scored(self) -> bool:
        return self.fid is not None

    def within(self, other: Quality, tolerance: float = STUDENT_TOLERANCE) -> bool:
        """Whether every score is at most `tolerance` worse than `other`'s (FID: lower is better; the others higher)."""
        if (self.fid is None or other.fid is None or self.r_precision is None or other.r_precision is None
                or self.colour_accuracy is None or other.colour_accuracy is None):
            return False
        return (self.fid <= other.fid * (1 + tolerance) and self.r_precision >= other.r_precision * (1 - tolerance)
                and self.colour_accuracy >= other.colour_accuracy * (1 - tolerance))


def leading_number(value: Any) -> float | None:
    """74.73 from "74.73", "155.25 (real-vs-real floor 39.40)" or 0.541 from "0.541 ± 0.005 (real photos ...)"."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value) if math.isfinite(value) else None
    match = _NUMBER.match(value) if isinstance(value, str) else None
    return float(match.group(1)) if match else None


def quality(pipeline: Scored) -> Quality:
    metrics = pipeline.stages[0].info.metrics or {}
    return Quality(leading_number(metrics.get(FID_KEY)), leading_number(metrics.get(R_PRECISION_KEY)),
                   leading_number(metrics.get(COLOUR_KEY)))


def teacher_checksum(pipeline: Scored) -> str | None:
    """The weights checksum of the teacher a student was distilled from (model.json student.teacher.sha256)."""
    section = pipeline.stages[0].info.raw.get("student")
    teacher = section.get("teacher") if isinstance(section, dict) else None
    return teacher.get("sha256") if isinstance(teacher, dict) else None


def weights_checksum(pipeline: Scored) -> str | None:
    weights = pipeline.stages[0].info.weights
    return getattr(weights, "sha256", None) if weights is not None else None


def best_first(pipelines: Mapping[str, P]) -> dict[str, P]:
    """`pipelines` reordered so that the first (the page's default) makes the best images (see the module's doc)."""
    scores = {name: quality(pipeline) for name, pipeline in pipelines.items()}
    given = list(pipelines)
    ranked = sorted(given, key=lambda name: (not scores[name].scored, scores[name].fid or 0.0,
                                             -(scores[name].r_precision or 0.0), given.index(name)))
    for name in [n for n in ranked if teacher_checksum(pipelines[n]) is not None]:  # the students: cards name a teacher
        checksum = teacher_checksum(pipelines[name])
        teachers = [other for other in ranked if other != name and weights_checksum(pipelines[other]) == checksum]
        teacher = teachers[0] if teachers else None
        earned = teacher is not None and scores[name].within(scores[teacher])
        if teacher is None or earned == (ranked.index(name) < ranked.index(teacher)):
            continue
        ranked.remove(name)  # earned: the same designs many times faster, in the teacher's place; else right after it
        ranked.insert(ranked.index(teacher) + (0 if earned else 1), name)
    return {name: pipelines[name] for name in ranked}


__all__ = ["Quality", "STUDENT_TOLERANCE", "best_first", "leading_number", "quality"]
