"""What a request to the app may carry, field by field. One table builds the page's input components and checks every
request against the same ranges and choices before Gradio processes any of it, so the page and the checks cannot drift.

    fields = request_fields(limits, models, attribute_choices, samplers, deterministic_samplers)
    checks = RequestChecks(fields)
    steps = checks.build("steps", value=20)     # gr.Slider(1, 100, step=1, label="Steps")
    ...
    checks.install(demo)                          # every event's inputs checked first

Gradio checks a slider's range and a dropdown's choices itself, but with a message that names no field and a traceback
in the server log per request; a string where a number belongs, too few values, or a file path that was never uploaded
came back as {"error": null}. Here a bad value is refused in one sentence that names the field as the page labels it and
says what it allows, with one log line. A file must be one Gradio received as an upload (in its upload folder): a path
to any other server file (or a URL for the server to fetch) is refused the same way whether it exists or not.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.utils import get_upload_folder

from .checks import ATTRIBUTES, MAX_SEED, Limits

logger = logging.getLogger("fashiongen.app")

MAX_TRUNCATION = 3.0  # a GAN's truncation slider: 0 = none; 3 is already past any useful value
REFUSAL_TITLE = "Please check the input"


@dataclass(frozen=True)
class Field:
    """One input of the page: the component that shows it and what a request may send for it."""

    label: str  # as the page shows it
    kind: type[gr.components.Component]  # gr.Slider, gr.Number, gr.Dropdown, gr.Radio, gr.Textbox, gr.Checkbox, an image
    low: float | None = None
    high: float | None = None
    step: float | None = None  # a slider's step
    whole: bool = False  # whole numbers only
    choices: tuple[str, ...] = ()
    optional: bool = False  # None allowed (an empty seed box, a dropdown or radio with nothing chosen)

    @property
    def name(self) -> str:
        """The label's first words, for a refusal: "Truncation", not "Truncation (lower: more typical ...)"."""
        return self.label.split(" (")[0].split(":")[0]


def request_fields(limits: Limits, models: list[str], attribute_choices: dict[str, list[str]], samplers: list[str],
                   deterministic_samplers: list[str]) -> dict[str, Field]:
    """Every input field of the page. Choices are every loaded model's (the page narrows them to the chosen model's, and
    the studio refuses a value the chosen model does not know)."""
    steps = Field("Steps", gr.Slider, limits.sampling.min_steps, limits.sampling.max_steps, step=1, whole=True)
    guidance = Field("Guidance scale", gr.Slider, 0, limits.sampling.max_guidance, step=0.5)
    return {
        "model": Field("Model", gr.Radio, choices=tuple(models), optional=True),
        "description": Field("Description", gr.Textbox, optional=True),
        "negative": Field("Negative description (optional)", gr.Textbox, optional=True),
        **{name: Field(name.capitalize(), gr.Dropdown, choices=tuple(attribute_choices[name]), optional=True)
           for name in ATTRIBUTES},
        "num_images": Field("Images", gr.Slider, 1, limits.max_images, step=1, whole=True),
        "steps": steps,
        "guidance": guidance,
        "sampler": Field("Sampler", gr.Dropdown, choices=tuple(samplers), optional=True),
        "deterministic_sampler": Field("Sampler (deterministic)", gr.Dropdown, choices=tuple(deterministic_samplers),
                                       optional=True),
        "truncation": Field("Truncation (lower: more typical garments, less variety; 0 = none)", gr.Slider, 0.0,
                            MAX_TRUNCATION, step=0.05),
        "interpolation_truncation": Field("Truncation", gr.Slider, 0.0, MAX_TRUNCATION, step=0.05),
        "seed": Field("Seed (image k gets seed + k)", gr.Number, 0, MAX_SEED, whole=True, optional=True),
        "random_seed": Field("Random seed", gr.Checkbox),
        "live": Field("Live: regenerate as you type (the seed stays put)", gr.Checkbox),
        "description_a": Field("First description", gr.Textbox, optional=True),
        "description_b": Field("Second description", gr.Textbox, optional=True),
        "seed_a": Field("First seed", gr.Number, 0, MAX_SEED, whole=True, optional=True),
        "seed_b": Field("Second seed", gr.Number, 0, MAX_SEED, whole=True, optional=True),
        "frames": Field("Frames", gr.Slider, 2, limits.max_frames, step=1, whole=True),
        "photo": Field("Photo: upload one (or send a design here); paint over what to change", gr.ImageEditor, optional=True),
        "new_description": Field("New description", gr.Textbox, optional=True),
        "strength": Field("Strength (0 keeps the photo, 1 ignores it; with a painted mask only that part changes)",
                          gr.Slider, 0.0, 1.0, step=0.05),
        "edit_seed": Field("Seed", gr.Number, 0, MAX_SEED, whole=True, optional=True),
        "design": Field("Design", gr.Image, optional=True),
        "products": Field("Products", gr.Slider, 1, limits.max_neighbours, step=1, whole=True),
    }


class Refused(gr.Error):
    """A request's value the app does not take: one sentence for the visitor, one line in the log, no traceback."""

    def __init__(self, message: str) -> None:
        super().__init__(message, title=REFUSAL_TITLE, print_exception=False)


class RequestChecks:
    """Builds each input component from its field and checks every request's values against the fields of the
    components it sends, before Gradio moves a file or preprocesses a value."""

    def __init__(self, fields: dict[str, Field]) -> None:
        self.fields = fields
        self._by_component: dict[int, Field] = {}

    def build(self, key: str, **options: Any) -> gr.components.Component:
        """The component of field `key` (its label, range, step and choices from the table; `options` for the rest)."""
        field = self.fields[key]
        if field.kind is gr.Slider:
            component = gr.Slider(field.low, field.high, step=field.step, label=field.label, **options)
        elif field.kind is gr.Number:
            component = gr.Number(precision=0 if field.whole else None, minimum=field.low, maximum=field.high,
                                  label=field.label, **options)
        elif field.kind in (gr.Dropdown, gr.Radio):
            component = field.kind(list(field.choices), label=field.label, **options)
        else:
            component = field.kind(label=field.label, **options)
        self._by_component[component._id] = field
        return component

    def install(self, demo: gr.Blocks) -> None:
        """Check each event's inputs before Gradio's own checks (Blocks.validate_inputs is the first thing Gradio does
        with a request's values, for the page and the API alike)."""
        gradio_checks = demo.validate_inputs

        def validate_inputs(block_fn: Any, inputs: list[Any]) -> None:
            try:
                self.check(block_fn.inputs, inputs)
            except Refused as refusal:
                logger.info("refused %s: %s", block_fn.api_name or block_fn.name, refusal.message)
                raise
            gradio_checks(block_fn, inputs)

        demo.validate_inputs = validate_inputs

    def check(self, components: list[Any], values: list[Any]) -> None:
        """Refuse (`Refused`) the first value its field does not allow; too few values are refused naming the missing."""
        if not isinstance(values, list) or len(values) < len(components):
            sent = len(values) if isinstance(values, list) else 0
            missing = ", ".join(_label(component) for component in components[sent:])
            raise Refused(f"This request sent {sent} values but needs {len(components)}; missing: {missing}.")
        for component, value in zip(components, values):
            if getattr(component, "stateful", False):
                continue  # a gr.State: its value is the session's, not the request's
            field = self._by_component.get(component._id)
            if field is not None and field.kind not in FILE_KINDS:
                check_value(field, value)
            elif getattr(component, "data_model", None) is not None:
                check_files(field.name if field else _label(component), component, value)


FILE_KINDS = (gr.Image, gr.ImageEditor, gr.Gallery, gr.File)


def check_value(field: Field, value: Any) -> None:
    """Refuse a value that is not of the field's type, outside its range or not one of its choices."""
    if value is None and field.optional:
        return
    if field.kind in (gr.Slider, gr.Number):
        _check_number(field, value)
    elif field.kind in (gr.Dropdown, gr.Radio):
        if not isinstance(value, str) or value not in field.choices:
            raise Refused(f"{field.name} must be one of: {', '.join(field.choices)}; got {_shown(value)}.")
    elif field.kind is gr.Checkbox:
        if not isinstance(value, bool):
            raise Refused(f"{field.name} must be true or false; got {_shown(value)}.")
    elif field.kind is gr.Textbox and not isinstance(value, str):
        raise Refused(f"{field.name} must be text; got {_shown(value)}.")


def _check_number(field: Field, value: Any) -> None:
    kind = "a whole number" if field.whole else "a number"
    allowed = f"{kind} from {_number(field.low)} to {_number(field.high)}"
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float) and not math.isfinite(value))
            or (field.whole and isinstance(value, float) and not value.is_integer()) or not field.low <= value <= field.high):
        raise Refused(f"{field.name} must be {allowed}; got {_shown(value)}.")


def check_files(name: str, component: Any, value: Any) -> None:
    """Refuse a file input whose files were not uploaded to this app (Gradio's upload folder), or that is not the
    component's kind of value; the refusal is the same whether a named path exists or not."""
    if value is None:
        return
    refusal = f"{name} must be an image uploaded to this app (files elsewhere on the server and URLs are not read)."
    uploads = Path(get_upload_folder()).resolve()
    for path in _file_paths(value):
        if path is None:
            continue  # no file: an image sent inline as a data: URL (gr.Image reads it), or nothing
        if not isinstance(path, str) or not _inside(path, uploads):
            raise Refused(refusal)
    try:
        component.data_model.model_validate(value, context={"validate_meta": True})
    except Exception:  # pydantic's ValidationError: not the component's kind of value
        raise Refused(refusal) from None


def _file_paths(value: Any) -> list[Any]:
    """The "path" of every file object in a component's payload (a dict with a "path" key, at any depth)."""
    if isinstance(value, dict):
        if "path" in value:
            return [value["path"]]
        return [path for item in value.values() for path in _file_paths(item)]
    if isinstance(value, (list, tuple)):
        return [path for item in value for path in _file_paths(item)]
    return []


def _inside(path: str, folder: Path) -> bool:
    """A regular file strictly inside `folder`, links and '..' resolved (False for any error: the same refusal)."""
    try:
        resolved = Path(path).resolve()
        return resolved.is_relative_to(folder) and resolved != folder and resolved.is_file()
    except (OSError, ValueError):
        return False


def _label(component: Any) -> str:
    return str(getattr(component, "label", None) or type(component).__name__).split(" (")[0].split(":")[0]


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


__all__ = ["Field", "MAX_TRUNCATION", "Refused", "RequestChecks", "check_files", "check_value", "request_fields"]
