"""What every tab of the page builds from and shares: the studio, the field table, each loaded model's controls, and
the handlers' common parts (refusals as Gradio messages, the visitor's session, progress, checked uploads)."""

from __future__ import annotations

import base64
import functools
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import gradio as gr
import numpy as np

from ...settings import PipelineInputError
from ..checks import ATTRIBUTES, Limits
from ..requests import RequestChecks, request_fields
from ..studio import Studio
from ..tasks import Update

logger = logging.getLogger("fashiongen.app")

MODEL_JOBS = "model"  # concurrency group of the endpoints that run the generator


@dataclass
class Page:
    """The studio behind the page, the one field table its inputs are built from and checked against
    (app/requests.py), and each loaded model's controls (fixed while the app runs: computed once)."""

    studio: Studio
    checks: RequestChecks
    controls_of: dict[str, dict[str, Any]]
    concurrency: int

    @classmethod
    def of(cls, studio: Studio, limits: Limits, concurrency: int) -> Page:
        controls_of = {name: studio.controls(name) for name in studio.models}
        # the dropdowns accept every loaded model's samplers (Gradio checks a value against the choices it started with);
        # the page narrows them to the chosen model's
        all_samplers = list(dict.fromkeys(name for model in studio.models for name in controls_of[model]["samplers"]))
        all_deterministic = list(dict.fromkeys(name for model in studio.models
                                               for name in controls_of[model]["deterministic_samplers"]))
        all_attributes = {name: list(dict.fromkeys(value for model in studio.models
                                                   for value in studio.attribute_choices_for(model)[name])) for name in ATTRIBUTES}
        # one table builds the input components and checks every request against them first (app/requests.py)
        checks = RequestChecks(request_fields(limits, studio.models, all_attributes, all_samplers, all_deterministic))
        return cls(studio, checks, controls_of, concurrency)

    def controls(self, model: str | None) -> dict[str, Any]:
        """The controls of the model a request names (None or "": the default); a name not loaded is refused."""
        if model not in (None, "") and model not in self.controls_of:
            self.studio.model(model)  # raises the refusal naming the loaded models
        return self.controls_of[model or self.studio.models[0]]

    @property
    def first(self) -> dict[str, Any]:
        """The default model's controls: what the page starts with."""
        return self.controls(None)

    @property
    def start_truncation(self) -> float:
        """The truncation sliders' starting value: what an API call without one gets."""
        truncating = [c for c in self.controls_of.values() if c["truncation"]]
        return truncating[0]["default_truncation"] if truncating else 1.0

    def truncation(self, model: str | None, value: float | None) -> float | None:
        return value if self.controls(model)["truncation"] and value is not None else None

    def model_job(self, progress_on: Any) -> dict[str, Any]:
        """An event that runs a model: in the shared concurrency group, its progress shown on `progress_on`."""
        return dict(concurrency_id=MODEL_JOBS, concurrency_limit=self.concurrency, show_progress_on=[progress_on])


def messages(function: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
    """Turn our input errors into Gradio messages and anything unexpected into a short one (logged in full)."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
        try:
            yield from function(*args, **kwargs)
        except gr.Error:
            raise
        except PipelineInputError as error:  # the visitor's to fix: a line in the log, no traceback
            logger.info("refused: %s", error)
            raise gr.Error(str(error), title="Please check the input", print_exception=False) from None
        except Exception as error:  # the app keeps serving; the log has the traceback
            logger.exception("request failed")
            raise gr.Error(f"Something went wrong: {type(error).__name__}: {error}. The app is still running; "
                           "try again or change the settings.", title="Generation failed") from None

    return wrapper


def session_of(request: gr.Request | None) -> str:
    return getattr(request, "session_hash", None) or "local"


def report(progress: gr.Progress, update: Update) -> None:
    done, total = update.progress
    progress(done / max(total, 1), desc=update.status.split("\n")[0])


def read_uploads_checked(component: gr.ImageEditor | gr.Image, studio: Studio) -> None:
    """Make an image input hand its uploads to Studio.read_upload (pixel limit checked before decoding, JPEGs decoded
    reduced) instead of Gradio decoding every file at full size: the editor's photo comes as RGB on white, its painted
    layers as RGBA, a gr.Image's upload as RGB. Set on the instance, with closures: Gradio writes a .pyi stub next to
    any module that subclasses a component, and a component given the studio as an argument stalled the page."""

    def read(source: str | bytes, what: str, keep_alpha: bool = False) -> np.ndarray:
        try:
            return studio.read_upload(source, what, keep_alpha)
        except PipelineInputError as error:
            logger.info("refused an upload: %s", error)
            raise gr.Error(str(error), title="Please check the upload", print_exception=False) from None

    def convert_and_format_image(file: Any, flatten_on_white: bool = False) -> np.ndarray | None:  # gr.ImageEditor's
        source = getattr(file, "path", None) or (bytes(file) if isinstance(file, (bytes, bytearray, memoryview)) else None)
        if source is None:
            return None
        return read(source, "photo" if flatten_on_white else "painted layer", keep_alpha=not flatten_on_white)

    def preprocess(payload: Any) -> np.ndarray | None:  # gr.Image's
        if payload is None:
            return None
        source: str | bytes | None = payload.path
        if source is None and (payload.url or "").startswith("data:"):
            source = base64.b64decode(payload.url.partition(",")[2])
        if source is None:
            raise gr.Error("The image did not arrive as a file; upload it again.", title="Please check the upload",
                           print_exception=False)
        return read(source, "image")

    if isinstance(component, gr.ImageEditor):
        component.convert_and_format_image = convert_and_format_image
    else:
        component.preprocess = preprocess


__all__ = ["MODEL_JOBS", "Page", "messages", "read_uploads_checked", "report", "session_of"]
