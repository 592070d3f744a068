"""What the app does, without its layout: checked requests, jobs that stream previews from a worker
thread and can be cancelled, and the files a designer downloads. `ui.py` wires these to Gradio.

    studio = Studio({"diffusion": pipeline, "gan": gan_pipeline}, products)   # or Studio(pipeline)
    for update in studio.generate(GenerateRequest("red floral summer dress", num_images=4, model="gan"), session="s1"):
        show(update.images, update.status)   # previews after every step, finished images as they come

A studio holds one or more loaded models; a request names one (default: the first). A many-step model
generates its images one at a time: on a CPU a batch costs as much per image as single images, so the
first finished image arrives after 1/N of the time, and every step shows a live preview. A one-forward
model (a GAN) generates them all in one forward.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import queue
import secrets
import shutil
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..data.images import UPLOAD_MAX_PIXELS, open_image, to_rgb
from ..data.records import RecordError
from ..grid import save_image
from ..jobs import STRIP_FILE, save_interpolation_files
from ..pipeline import FashionGenPipeline, StepPreview
from ..settings import (
    DEFAULT_GUIDANCE,
    PipelineInputError,
    SamplingLimits,
    SamplingSettings,
    image_seeds,
)
from .compute import ComputeThread
from .products import Product, ProductIndex

logger = logging.getLogger("fashiongen.app")

ATTRIBUTES = ("category", "gender", "colour", "season")  # the dropdowns, always present so the API never changes
ANY = "any"
MAX_SEED = 2**31 - 1
FEW_STEPS = 4  # a base model sampling in this many steps or fewer shows no previews and batches all but the first image
PREVIEW_INTERVAL_S = 1.0  # the first preview at once, then at most one a second: each page update costs CPU the
# sampler would otherwise use (0.2 s made a 4-image request 1.32x slower than 1 s on 2 cores; benchmarks/README.md)


@dataclass(frozen=True)
class Limits:
    """Bounds on what one request may ask for (the sliders use them too)."""

    max_images: int = 8
    sampling: SamplingLimits = SamplingLimits(max_steps=100, max_guidance=20.0)  # steps, guidance: a public server's share
    max_frames: int = 16
    max_description_chars: int = 2000  # longer text is cut here, before the tokenizer
    max_neighbours: int = 16
    max_upload_mb: int = 20  # one uploaded file; Gradio refuses a larger one while it arrives (launch(max_file_size))
    max_upload_pixels: int = UPLOAD_MAX_PIXELS  # one uploaded image, checked from its header before it is decoded
    photo_side: int = 1024  # uploads are kept at about this many px on the short side (the models work at 64-256)


# The page's names for the sampling settings, so a refusal speaks the page's language.
SETTING_LABELS = {"num_inference_steps": "Steps", "guidance_scale": "Guidance scale", "scheduler": "Sampler",
                  "negative_prompt": "Negative description", "truncation": "Truncation"}


def model_names(pipelines: list[FashionGenPipeline], sources: list[str] | None = None) -> list[str]:
    """Names for the page's model choice: the family ("diffusion", "gan"), with the folder's name where two share one."""
    families = [pipeline.stages[0].family for pipeline in pipelines]
    sources = sources or [Path(pipeline.stages[0].source).name for pipeline in pipelines]
    names = [family if families.count(family) == 1 else f"{family} ({source})" for family, source in zip(families, sources)]
    return [f"{name} #{number + 1}" if names.count(name) > 1 else name for number, name in enumerate(names)]  # same folder name


class JobCancelled(Exception):
    """Raised inside the worker at the next sampling step after a cancel."""


@dataclass
class GenerateRequest:
    description: str
    negative: str = ""
    attributes: dict[str, str] = field(default_factory=dict)
    num_images: int = 4
    steps: int | None = None  # None: the model's default (20 for diffusion, 4 for a student)
    guidance: float = DEFAULT_GUIDANCE
    sampler: str | None = None  # None: the model's default (dpm++ for diffusion, one-step for a GAN)
    seed: int = 0
    random_seed: bool = False
    model: str | None = None  # one of Studio.models; None: the first
    truncation: float | None = None  # GAN only: None = the model's default


@dataclass
class InterpolateRequest:
    description_a: str
    description_b: str
    seed_a: int = 0
    seed_b: int = 1
    frames: int = 8
    steps: int | None = None  # None: the model's default (20 for diffusion, 4 for a student)
    guidance: float = DEFAULT_GUIDANCE
    sampler: str | None = None
    model: str | None = None
    truncation: float | None = None


@dataclass
class EditRequest:
    image: np.ndarray  # uint8 [H, W, 3]
    description: str
    mask: np.ndarray | None = None  # bool [H, W], True = repaint
    strength: float = 0.6
    num_images: int = 2
    steps: int | None = None  # None: the model's default (20 for diffusion, 4 for a student)
    guidance: float = DEFAULT_GUIDANCE
    sampler: str | None = None
    seed: int = 0
    model: str | None = None


@dataclass
class Update:
    """One step of a job as the page shows it: the images so far (finished first, then previews)."""

    images: list[tuple[Image.Image, str]]  # (image, caption under it)
    status: str
    done: bool = False
    files: list[str] = field(default_factory=list)  # downloads, when done
    progress: tuple[int, int] = (0, 1)  # (steps done, steps in all)
    extra: dict[str, Any] = field(default_factory=dict)  # per-job results (e.g. the GIF path)


def _wait(job: Future[Any], timeout: float = 30) -> None:
    """Wait for a job on the compute thread to finish (it stops at its next step once cancelled); its outcome was
    already reported through the job's queue."""
    with contextlib.suppress(FutureTimeout):
        job.result(timeout=timeout)


class Studio:
    """One or more loaded pipelines (and optionally a product index) shared by every visitor of the app."""

    def __init__(self, pipeline: FashionGenPipeline | Mapping[str, FashionGenPipeline], products: ProductIndex | None = None,
                 limits: Limits = Limits(), output_dir: str | Path | None = None, concurrency: int = 1,
                 compute: ComputeThread | None = None) -> None:
        pipelines = dict(pipeline) if isinstance(pipeline, Mapping) else dict(zip(model_names([pipeline]), [pipeline]))
        if not pipelines:
            raise ValueError("a studio needs at least one model")
        self.pipelines: dict[str, FashionGenPipeline] = pipelines
        self.pipeline = next(iter(pipelines.values()))  # the default model: the first
        self.products = products
        self.limits = limits
        self.concurrency = concurrency  # model jobs at once: 1 runs them all on the compute thread (app/compute.py)
        self._own_compute = compute is None
        self.compute = compute or ComputeThread()  # pass the one the models were loaded on (app.py does)
        self._own_output = output_dir is None
        self.output_dir = Path(output_dir or tempfile.mkdtemp(prefix="fashiongen-app-"))
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self._jobs: dict[str, set[threading.Event]] = {}
        self._jobs_lock = threading.Lock()
        self._counter = 0
        for loaded in pipelines.values():
            loaded.show_progress = False  # the page shows progress; no tqdm bars in the server log per request

    # ------------------------------------------------------------------ facts for the page

    @property
    def models(self) -> list[str]:
        """The loaded models' names, the default first."""
        return list(self.pipelines)

    def model(self, name: Any = None) -> FashionGenPipeline:
        """The pipeline a request names (None or "": the default); a name not loaded is refused."""
        if name in (None, ""):
            return self.pipeline
        if not isinstance(name, str) or name not in self.pipelines:
            raise PipelineInputError(f"Model '{name}' is not loaded here; choose one of: {', '.join(self.pipelines)}.")
        return self.pipelines[name]

    def attribute_choices_for(self, name: str | None = None) -> dict[str, list[str]]:
        """Dropdown choices per attribute: 'any' first, then the model's vocabulary ('any' alone if it has none)."""
        vocab = self.model(name).attribute_vocab
        return {attribute: [ANY, *vocab.get(attribute, [])] for attribute in ATTRIBUTES}

    @property
    def attribute_choices(self) -> dict[str, list[str]]:
        return self.attribute_choices_for(None)

    def samplers_for(self, name: str | None = None) -> list[str]:
        return list(self.model(name).samplers)

    def deterministic_samplers_for(self, name: str | None = None) -> list[str]:
        return list(self.model(name).deterministic_samplers)

    @property
    def samplers(self) -> list[str]:
        return self.samplers_for(None)

    @property
    def deterministic_samplers(self) -> list[str]:
        return self.deterministic_samplers_for(None)

    def controls(self, name: str | None = None) -> dict[str, Any]:
        """What the page shows for a model: its sampling settings, samplers, whether it edits, whether it is fast
        enough to regenerate as the description changes (one forward an image)."""
        pipeline = self.model(name)
        base = pipeline.stages[0]
        uses = set(base.settings_used)
        one_forward = base.steps_per_image(pipeline.sampling_settings()) == 1
        return {"family": base.family, "steps": "num_inference_steps" in uses, "guidance": "guidance_scale" in uses,
                "negative": "negative_prompt" in uses, "truncation": "truncation" in uses,
                "default_truncation": float(getattr(base, "default_truncation", 1.0)), "samplers": list(pipeline.samplers),
                "deterministic_samplers": list(pipeline.deterministic_samplers), "default_sampler": pipeline.default_sampler,
                "can_edit": bool(base.can_edit), "live": one_forward, "default_steps": int(base.default_steps)}

    def edit_refusal(self, name: str | None = None) -> str:
        """Why a model cannot edit photos and which loaded one can ("" when it can): one sentence for the API and the page."""
        pipeline = self.model(name)
        if pipeline.stages[0].can_edit:
            return ""
        editors = [n for n, p in self.pipelines.items() if p.stages[0].can_edit]
        return f"This model ({pipeline.stages[0].family}) cannot edit photos; choose {' or '.join(editors) or 'a diffusion model'}"

    def describe_model(self, name: str | None = None) -> str:
        """One line about a loaded model for the page header."""
        pipeline = self.model(name)
        base = pipeline.stages[0]
        steps, data = base.info.training.get("steps"), base.info.data
        parts = [base.family, f"{pipeline.resolution} px", f"{sum(p.numel() for p in base.model.parameters()) / 1e6:.1f}M parameters"]
        if steps is not None:
            parts.append(f"{steps:,} training steps")
        if data.source:
            parts.append(f"trained on {Path(str(data.source)).name}")
        parts.append(f"fingerprint {pipeline.fingerprint[:12]}")
        return " · ".join(parts)

    def close(self) -> None:
        if self._own_output:
            shutil.rmtree(self.output_dir, ignore_errors=True)
        if self._own_compute:
            self.compute.close()

    # ------------------------------------------------------------------ uploads

    def read_upload(self, source: str | Path | bytes, what: str = "photo", keep_alpha: bool = False) -> np.ndarray:
        """An uploaded image file -> uint8 [H, W, 3] (RGBA [H, W, 4] with `keep_alpha`), within the upload limits.

        An image over `max_upload_pixels` or MAX_ASPECT_RATIO (a 300000x1 strip) is refused from its header, before
        any pixel is decoded; a JPEG is decoded at 1/2-1/8 scale and anything larger reduced (box filter) to about
        `photo_side` px on the short side, so a big photo costs a few MB however large its file says it is. A photo is
        turned upright by its EXIF orientation, as the browser shows it. Transparency is composited on white.
        """
        name = f"{what} '{Path(source).name}'" if isinstance(source, (str, Path)) else what
        side = self.limits.photo_side
        try:
            with open_image(source, name, self.limits.max_upload_pixels, min_size=side, upright=True) as image:
                factor = min(image.size) // side
                if keep_alpha:
                    picture = image.convert("RGBA")
                    return np.asarray(picture.reduce(factor) if factor >= 2 else picture)
                pixels = to_rgb(image, name)  # [H, W, 3]
        except RecordError as error:
            raise PipelineInputError(f"The {name} cannot be used: {error.reason}. Uploads may be up to "
                                     f"{self.limits.max_upload_mb} MB and {self.limits.max_upload_pixels / 1e6:g} megapixels "
                                     "(e.g. 4000x4000); a photo of 1000-2000 px a side is plenty.") from None
        return np.asarray(Image.fromarray(pixels).reduce(factor)) if factor >= 2 else pixels

    # ------------------------------------------------------------------ checks

    def _description(self, text: Any, what: str = "description", pipeline: FashionGenPipeline | None = None) -> tuple[str, list[str]]:
        """A usable description and the notes to show about it (cut, truncated)."""
        if not isinstance(text, str) or not text.strip():
            raise PipelineInputError(f"The {what} is empty: describe the garment, e.g. \"red floral summer dress\".")
        notes = []
        text = " ".join(text.split())
        if len(text) > self.limits.max_description_chars:
            text = text[: self.limits.max_description_chars]
            notes.append(f"The {what} was cut to {self.limits.max_description_chars} characters.")
        encoder = (pipeline or self.pipeline).encoder
        tokens = encoder.token_count(text)
        if tokens > encoder.max_length:
            notes.append(f"The {what} is {tokens} tokens long; the caption encoder reads the first {encoder.max_length}, "
                         "so the rest was ignored.")
        return text, notes

    def _settings(self, pipeline: FashionGenPipeline, steps: Any, guidance: Any, sampler: Any, negative: str = "",
                  truncation: Any = None) -> SamplingSettings:
        """The request's settings, checked once against the app's limits and the model's samplers. Steps and guidance
        always come from the page's sliders (hidden for a model that does not use them, and then unused); a negative
        description or a truncation given to a model that does not use it is refused."""
        uses = pipeline.stages[0].settings_used
        for field_name, value in (("negative_prompt", negative), ("truncation", truncation)):
            if value not in (None, "") and field_name not in uses:
                raise PipelineInputError(f"{SETTING_LABELS[field_name]}: this model ({pipeline.stages[0].family}) does not use it.")
        return SamplingSettings.parse(names=SETTING_LABELS, limits=self.limits.sampling, samplers=pipeline.samplers,
                                      num_inference_steps=_integer(pipeline.stages[0].default_steps if steps in (None, "") else steps, "Steps"), guidance_scale=_number(guidance, "Guidance scale"),
                                      scheduler=sampler if sampler not in (None, "") else pipeline.default_sampler,
                                      negative_prompt=negative,
                                      truncation=None if truncation in (None, "") else _number(truncation, "Truncation"))

    def _count(self, value: Any, what: str, low: int, high: int) -> int:
        count = _integer(value, what)
        if not low <= count <= high:
            raise PipelineInputError(f"{what} must be between {low} and {high}, got {count}.")
        return count

    def _attributes(self, wanted: dict[str, Any], pipeline: FashionGenPipeline | None = None) -> dict[str, str]:
        vocab = (pipeline or self.pipeline).attribute_vocab
        choices = {attribute: [ANY, *vocab.get(attribute, [])] for attribute in ATTRIBUTES}
        chosen = {}
        for name, value in wanted.items():
            if value in (None, "", ANY):
                continue
            if name not in choices or value not in choices[name]:
                raise PipelineInputError(f"{name} '{value}' is not one this model knows; choose from the list.")
            chosen[name] = str(value)
        return chosen

    # ------------------------------------------------------------------ jobs

    def cancel(self, session: str) -> int:
        """Stop every running job of a session at its next sampling step; returns how many were running."""
        with self._jobs_lock:
            events = list(self._jobs.get(session, ()))
        for event in events:
            event.set()
        return len(events)

    def _job_dir(self, kind: str) -> Path:
        with self._jobs_lock:
            self._counter += 1
            number = self._counter
        directory = self.output_dir / f"{number:05d}-{kind}-{secrets.token_hex(3)}"
        directory.mkdir(parents=True)
        return directory

    def _stream(self, session: str, work: Callable[[Callable[[str, Any], None]], Any]) -> Iterator[tuple[str, Any]]:
        """Run `work(report)` in a worker thread and yield what it reports, then ("done", its result).

        Previews are thinned: when the page falls behind, only the newest preview is yielded. Closing this
        iterator (the visitor left, or pressed Stop) or `cancel(session)` stops the worker at its next step.
        """
        stop = threading.Event()
        with self._jobs_lock:
            self._jobs.setdefault(session, set()).add(stop)
        events: queue.Queue[tuple[str, Any]] = queue.Queue()

        def report(kind: str, value: Any) -> None:
            if stop.is_set():
                raise JobCancelled
            events.put((kind, value))

        def target() -> None:
            try:
                events.put(("done", work(report)))
            except JobCancelled:
                events.put(("cancelled", None))
            except BaseException as error:  # handed to the page's thread, which turns it into a message
                events.put(("error", error))

        # on the app's one compute thread (app/compute.py: a thread per job made every forward ~40% slower on a CPU);
        # with more than one job at a time (a GPU server's --concurrency) a thread of its own
        if self.concurrency == 1:
            finish: Callable[[], Any] = functools.partial(_wait, self.compute.submit(target))
        else:
            worker = threading.Thread(target=target, name=f"fashiongen-job-{session[:8]}", daemon=True)
            worker.start()
            finish = functools.partial(worker.join, timeout=30)
        last_preview = 0.0
        pending: deque[tuple[str, Any]] = deque()
        try:
            while True:
                if not pending:
                    pending.append(events.get())
                pending.extend(_drain(events))
                kind, value = pending.popleft()
                if kind == "preview":
                    if pending and pending[0][0] == "preview":
                        continue  # a newer preview is already waiting
                    if time.monotonic() - last_preview < PREVIEW_INTERVAL_S:
                        continue
                    last_preview = time.monotonic()
                if kind == "error":
                    raise value
                yield kind, value
                if kind in ("done", "cancelled"):
                    return
        finally:
            stop.set()
            finish()  # at most one sampling step, so the next queued job gets the cores
            with self._jobs_lock:
                self._jobs.get(session, set()).discard(stop)
                if not self._jobs.get(session):
                    self._jobs.pop(session, None)

    # ------------------------------------------------------------------ generate

    def generate(self, request: GenerateRequest, session: str = "local") -> Iterator[Update]:
        """Images for a description, one at a time with live previews; the last update carries the downloads."""
        pipeline = self.model(request.model)
        description, notes = self._description(request.description, pipeline=pipeline)
        negative = " ".join(str(request.negative or "").split())[: self.limits.max_description_chars]
        settings = self._settings(pipeline, request.steps, request.guidance, request.sampler, negative, request.truncation)
        count = self._count(request.num_images, "Number of images", 1, self.limits.max_images)
        attributes = self._attributes(request.attributes, pipeline)
        seed = secrets.randbelow(MAX_SEED - count) if request.random_seed else _integer(request.seed, "Seed")
        if not 0 <= seed <= MAX_SEED - count:
            raise PipelineInputError(f"Seed must be between 0 and {MAX_SEED - count}, got {seed}.")
        seeds = image_seeds(seed, count)
        per_image = pipeline.stages[0].steps_per_image(settings) * len(pipeline.stages)
        total_steps = count * per_image
        started = time.perf_counter()

        def work(report: Callable[[str, Any], None]) -> list[Image.Image]:
            if per_image == 1:  # one forward makes every image: one batch, no previews
                images = pipeline.generate_images([description] * count, seeds, settings, [attributes] * count)
                for number, image in enumerate(images):
                    report("image", (number, image))
                return images
            if pipeline.stages[0].steps_per_image(settings) <= FEW_STEPS:  # a few-step model (the student): no previews,
                # the first image alone (the soonest first result), then the others in one batch, which costs about
                # half of making them one by one (batch 1 forwards waste most of the CPU); seeds make the same images
                finished = []
                for first, group in ((0, seeds[:1]), (1, seeds[1:])):
                    if group:
                        images = pipeline.generate_images([description] * len(group), group, settings, [attributes] * len(group))
                        finished.extend(images)
                        report("images", list(enumerate(images, start=first)))  # one page update for the batch
                return finished
            finished = []
            for number, image_seed in enumerate(seeds):
                def preview(step: StepPreview, number: int = number) -> None:
                    report("preview", (number, step))

                image = pipeline.generate_images([description], [image_seed], settings, [attributes], preview=preview)[0]
                finished.append(image)
                report("image", (number, image))
            return finished

        finished: list[tuple[Image.Image, str]] = []
        timings: list[float] = []
        note = "".join(f"\n\n*Note: {text}*" for text in notes)
        for kind, value in self._stream(session, work):
            if kind == "preview":
                number, step = value
                done = number * per_image + step.stage * (per_image // len(pipeline.stages)) + step.step
                caption = f"seed {seeds[number]} · step {step.step}/{step.steps}"
                status = f"Image {number + 1} of {count}: step {step.step} of {step.steps}{note}"
                yield Update(finished + [(step.pil()[0], caption)], status, progress=(done, total_steps))
            elif kind in ("image", "images"):
                for number, image in [value] if kind == "image" else value:
                    timings.append(time.perf_counter() - started)
                    finished.append((image, f"seed {seeds[number]}"))
                status = (f"Image {number + 1} of {count} finished after {timings[-1]:.1f} s{note}" if kind == "image" or
                          len(value) == 1 else f"Images {value[0][0] + 1}-{number + 1} of {count} finished after "
                                               f"{timings[-1]:.1f} s{note}")
                yield Update(list(finished), status, progress=((number + 1) * per_image, total_steps))
            elif kind == "cancelled":
                yield Update(list(finished), f"Stopped after {len(finished)} of {count} images.", done=True)
                return
            else:
                break
        elapsed = time.perf_counter() - started
        directory = self._job_dir("generate")
        files = []
        for (image, _), image_seed in zip(finished, seeds):
            path = directory / f"fashiongen-seed{image_seed}.png"
            save_image(image, path)
            files.append(str(path))
        record = {"description": description, "negative": negative, "attributes": attributes, "seeds": seeds,
                  "num_images": count, "settings": asdict(settings), "notes": notes, "seconds": round(elapsed, 3),
                  "seconds_to_first_image": round(timings[0], 3) if timings else None, "model": pipeline.describe()}
        settings_path = directory / "settings.json"
        settings_path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        files.append(str(settings_path))
        status = (f"{count} image{'s' if count > 1 else ''} in {elapsed:.1f} s (first after {timings[0]:.1f} s), "
                  f"seeds {seeds[0]}–{seeds[-1]}{note}") if count > 1 else f"1 image in {elapsed:.1f} s, seed {seeds[0]}{note}"
        yield Update(list(finished), status, done=True, files=files, progress=(total_steps, total_steps),
                     extra={"seeds": seeds, "seed": seed})

    # ------------------------------------------------------------------ interpolate

    def interpolate(self, request: InterpolateRequest, session: str = "local") -> Iterator[Update]:
        """Frames between two (description, seed) designs: a strip, a looping GIF and the frames."""
        pipeline = self.model(request.model)
        description_a, notes_a = self._description(request.description_a, "first description", pipeline)
        description_b, notes_b = self._description(request.description_b, "second description", pipeline)
        settings = self._settings(pipeline, request.steps, request.guidance, request.sampler, truncation=request.truncation)
        deterministic = list(pipeline.deterministic_samplers)
        if settings.scheduler not in deterministic:
            raise PipelineInputError(f"Interpolation needs a deterministic sampler ({', '.join(deterministic)}), "
                                     f"not {settings.scheduler}.")
        frames = self._count(request.frames, "Number of frames", 2, self.limits.max_frames)
        seed_a, seed_b = (_integer(request.seed_a, "First seed"), _integer(request.seed_b, "Second seed"))
        for seed, what in ((seed_a, "First seed"), (seed_b, "Second seed")):
            if not 0 <= seed <= MAX_SEED:
                raise PipelineInputError(f"{what} must be between 0 and {MAX_SEED}, got {seed}.")
        per_batch = pipeline.stages[0].steps_per_image(settings)
        total_steps = per_batch * len(pipeline.stages) * -(-frames // pipeline.batch_size)
        started = time.perf_counter()

        def work(report: Callable[[str, Any], None]) -> list[Image.Image]:
            return pipeline.interpolate(description_a, description_b, seed_a, seed_b, frames, settings=settings,
                                             preview=lambda step: report("preview", step))

        note = "".join(f"\n\n*Note: {text}*" for text in notes_a + notes_b)
        result: list[Image.Image] = []
        for kind, value in self._stream(session, work):
            if kind == "preview":
                batch = value.first // pipeline.batch_size
                done = (batch * len(pipeline.stages) + value.stage) * per_batch + value.step
                pictures = value.pil()
                shown = [(image, f"frame {value.first + i + 1} · step {value.step}/{value.steps}") for i, image in enumerate(pictures)]
                yield Update(shown, f"Frames {value.first + 1}–{value.first + len(pictures)} of {frames}: step {value.step} of "
                             f"{value.steps}{note}", progress=(done, total_steps))
            elif kind == "cancelled":
                yield Update([], "Stopped.", done=True)
                return
            elif kind == "done":
                result = value
        directory = self._job_dir("interpolate")
        save_interpolation_files(result, description_a, description_b, directory)
        record = {"description_a": description_a, "description_b": description_b, "seed_a": seed_a, "seed_b": seed_b,
                  "frames": frames, "settings": asdict(settings), "model": pipeline.describe()}
        (directory / "settings.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        elapsed = time.perf_counter() - started
        captions = [f"t = {i / (frames - 1):.2f}" for i in range(frames)]
        yield Update(list(zip(result, captions)), f"{frames} frames in {elapsed:.1f} s{note}", done=True,
                     files=[str(directory / "interpolation.gif"), str(directory / STRIP_FILE), str(directory / "settings.json")],
                     progress=(total_steps, total_steps),
                     extra={"strip": str(directory / STRIP_FILE), "gif": str(directory / "interpolation.gif")})

    # ------------------------------------------------------------------ edit

    def edit(self, request: EditRequest, session: str = "local") -> Iterator[Update]:
        """New versions of a photo for a new description (SDEdit); with a mask only the masked region is repainted."""
        pipeline = self.model(request.model)
        refusal = self.edit_refusal(request.model)
        if refusal:
            raise PipelineInputError(f"{refusal} to edit, or generate from a description.")
        if request.image is None:
            raise PipelineInputError("Upload a photo to edit (or send a generated image here).")
        description, notes = self._description(request.description, "new description", pipeline)
        settings = self._settings(pipeline, request.steps, request.guidance, request.sampler)
        strength = _number(request.strength, "Strength")
        if not 0.0 <= strength <= 1.0:
            raise PipelineInputError(f"Strength must be between 0 (keep the photo) and 1 (ignore it), got {strength:g}.")
        count = self._count(request.num_images, "Number of images", 1, self.limits.max_images)
        seed = _integer(request.seed, "Seed")
        if not 0 <= seed <= MAX_SEED - count:
            raise PipelineInputError(f"Seed must be between 0 and {MAX_SEED - count}, got {seed}.")
        mask = None
        if request.mask is not None and request.mask.any():
            mask = Image.fromarray(np.where(request.mask, 255, 0).astype(np.uint8)).convert("RGB")
        seeds = image_seeds(seed, count)
        per_image = max(1, min(settings.num_inference_steps, round(settings.num_inference_steps * strength)))
        total_steps = count * per_image * len(pipeline.stages)
        started = time.perf_counter()

        def work(report: Callable[[str, Any], None]) -> list[Image.Image]:
            finished = []
            for number, image_seed in enumerate(seeds):
                image = pipeline.edit(request.image, description, strength, mask, 1, image_seed, settings=settings,
                                           preview=lambda step, number=number: report("preview", (number, step)))[0]
                finished.append(image)
                report("image", (number, image))
            return finished

        finished: list[tuple[Image.Image, str]] = []
        note = "".join(f"\n\n*Note: {text}*" for text in notes)
        what = "masked region repainted" if mask is not None else "whole photo"
        for kind, value in self._stream(session, work):
            if kind == "preview":
                number, step = value
                unit = per_image * len(pipeline.stages)  # the step's own count decides the fraction (a GAN's inversion has its own)
                done = number * unit + min(unit, round(unit * step.step / max(step.steps, 1)))
                yield Update(finished + [(step.pil()[0], f"seed {seeds[number]} · step {step.step}/{step.steps}")],
                             f"Edit {number + 1} of {count}: step {step.step} of {step.steps}{note}", progress=(done, total_steps))
            elif kind == "image":
                number, image = value
                finished.append((image, f"seed {seeds[number]}"))
                yield Update(list(finished), f"Edit {number + 1} of {count} finished{note}",
                             progress=((number + 1) * per_image * len(pipeline.stages), total_steps))
            elif kind == "cancelled":
                yield Update(list(finished), f"Stopped after {len(finished)} of {count} edits.", done=True)
                return
        directory = self._job_dir("edit")
        files = []
        save_image(Image.fromarray(np.ascontiguousarray(request.image)), directory / "input.png")
        for (image, _), image_seed in zip(finished, seeds):
            files.append(str(directory / f"fashiongen-edit-seed{image_seed}.png"))
            save_image(image, files[-1])
        record = {"description": description, "strength": strength, "masked": mask is not None, "seeds": seeds,
                  "settings": asdict(settings), "model": pipeline.describe()}
        (directory / "settings.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        files.append(str(directory / "settings.json"))
        elapsed = time.perf_counter() - started
        yield Update(list(finished), f"{count} edit{'s' if count > 1 else ''} ({what}, strength {strength:g}) in {elapsed:.1f} s{note}",
                     done=True, files=files, progress=(total_steps, total_steps))

    # ------------------------------------------------------------------ nearest products

    def nearest(self, image: np.ndarray | Image.Image | None, k: int = 6) -> tuple[list[Product], str]:
        """The closest real training products to an image, and a sentence on how close they are."""
        if self.products is None:
            raise PipelineInputError("No product index is loaded: start the app with --products DATASET "
                                     "(e.g. ../shared/data/fashion-products) to search real products.")
        if image is None:
            raise PipelineInputError("Choose an image first: upload one or send a generated image here.")
        k = self._count(k, "Number of products", 1, self.limits.max_neighbours)
        array = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
        if array.ndim == 2:
            array = np.repeat(array[..., None], 3, axis=-1)
        if array.ndim != 3 or array.shape[-1] not in (3, 4):
            raise PipelineInputError(f"Expected a colour image, got an array of shape {array.shape}.")
        array = np.ascontiguousarray(array[..., :3].astype(np.uint8))
        found = self.compute.run(self.products.search, array, k)
        top = found[0].similarity if found else float("nan")
        verdict = self.products.novelty(top)
        return found, f"Closest product: similarity {top:.3f}. {verdict}"


def _drain(events: queue.Queue[tuple[str, Any]]) -> list[tuple[str, Any]]:
    items = []
    while True:
        try:
            items.append(events.get_nowait())
        except queue.Empty:
            return items


def _integer(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise PipelineInputError(f"{what} must be a whole number, got {value!r}.")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise PipelineInputError(f"{what} must be a whole number, got {value!r}.") from None
    if not number.is_integer():
        raise PipelineInputError(f"{what} must be a whole number, got {value!r}.")
    return int(number)


def _number(value: Any, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise PipelineInputError(f"{what} must be a number, got {value!r}.") from None
    if not np.isfinite(number):
        raise PipelineInputError(f"{what} must be a finite number, got {value!r}.")
    return number


__all__ = ["ANY", "ATTRIBUTES", "EditRequest", "GenerateRequest", "InterpolateRequest", "JobCancelled", "Limits", "Studio",
           "Update", "model_names"]
