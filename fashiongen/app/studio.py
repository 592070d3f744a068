"""What the app does, without its layout: the loaded models and what the page shows of each, and the request
dispatched to its model and its task (tasks.py) on the compute worker (compute.py). `ui.py` wires this to Gradio.

    studio = Studio({"diffusion": pipeline, "gan": gan_pipeline}, products)   # or Studio(pipeline)
    for update in studio.generate(GenerateRequest("red floral summer dress", num_images=4, model="gan"), session="s1"):
        show(update.images, update.status)   # previews after every step, finished images as they come

A studio holds one or more loaded models; a request names one (default: the first).
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..pipeline import FashionGenPipeline
from ..pipeline.publishing import training_summary
from ..settings import PipelineInputError
from . import tasks
from .checks import ANY, ATTRIBUTES, EditRequest, GenerateRequest, InterpolateRequest, Limits, check_count
from .compute import ComputeThread, Jobs
from .choice import quality
from .indexing import BackgroundIndex
from .products import Product, ProductIndex
from .tasks import Update, Workshop
from .uploads import read_upload


def model_names(pipelines: list[FashionGenPipeline], sources: list[str] | None = None) -> list[str]:
    """Names for the page's model choice: the family ("diffusion", "gan"), with the folder's name where two share one."""
    families = [pipeline.stages[0].family for pipeline in pipelines]
    sources = sources or [Path(pipeline.stages[0].source).name for pipeline in pipelines]
    names = [family if families.count(family) == 1 else f"{family} ({source})" for family, source in zip(families, sources)]
    return [f"{name} #{number + 1}" if names.count(name) > 1 else name for number, name in enumerate(names)]  # same folder name


class Studio:
    """One or more loaded pipelines (and optionally a product index) shared by every visitor of the app."""

    def __init__(self, pipeline: FashionGenPipeline | Mapping[str, FashionGenPipeline],
                 products: ProductIndex | BackgroundIndex | None = None,
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
        self.jobs = Jobs(self.compute, concurrency)
        self._own_output = output_dir is None
        self.output_dir = Path(output_dir or tempfile.mkdtemp(prefix="fashiongen-app-"))
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self._folders_lock = threading.Lock()
        self._counter = 0
        self.workshop = Workshop(limits, self.jobs, self._job_dir)
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
        data, scores = base.info.data, quality(pipeline)
        parts = [base.family, f"{pipeline.resolution} px", f"{sum(p.numel() for p in base.model.parameters()) / 1e6:.1f}M parameters"]
        if trained := training_summary(base.family, base.info.training):
            parts.append(trained)
        if scores.fid is not None:
            parts.append(f"FID {scores.fid:g}" + (f", R-precision {scores.r_precision:g}" if scores.r_precision is not None else ""))
        if data.source:
            parts.append(f"trained on {Path(str(data.source)).name}")
        parts.append(f"fingerprint {pipeline.fingerprint[:12]}")
        return " · ".join(parts)

    def close(self) -> None:
        if self._own_output:
            shutil.rmtree(self.output_dir, ignore_errors=True)
        if self._own_compute:
            self.compute.close()

    # ------------------------------------------------------------------ uploads and jobs

    def read_upload(self, source: str | Path | bytes, what: str = "photo", keep_alpha: bool = False) -> np.ndarray:
        """An uploaded image file -> uint8 [H, W, 3] (RGBA with `keep_alpha`) within the studio's upload limits
        (uploads.read_upload)."""
        return read_upload(source, self.limits, what, keep_alpha)

    def cancel(self, session: str) -> int:
        """Stop every running job of a session at its next sampling step; returns how many were running."""
        return self.jobs.cancel(session)

    def _job_dir(self, kind: str) -> Path:
        with self._folders_lock:
            self._counter += 1
            number = self._counter
        directory = self.output_dir / f"{number:05d}-{kind}-{secrets.token_hex(3)}"
        directory.mkdir(parents=True)
        return directory

    # ------------------------------------------------------------------ tasks

    def generate(self, request: GenerateRequest, session: str = "local") -> Iterator[Update]:
        """Images for a description, one at a time with live previews; the last update carries the downloads."""
        pipeline = self.model(request.model)  # refuses a name not loaded
        yield from tasks.generate(self.workshop, pipeline, request, session, request.model or next(iter(self.pipelines)))

    def interpolate(self, request: InterpolateRequest, session: str = "local") -> Iterator[Update]:
        """Frames between two (description, seed) designs: a strip, a looping GIF and the frames."""
        yield from tasks.interpolate(self.workshop, self.model(request.model), request, session)

    def edit(self, request: EditRequest, session: str = "local") -> Iterator[Update]:
        """New versions of a photo for a new description (SDEdit); with a mask only the masked region is repainted."""
        pipeline = self.model(request.model)
        refusal = self.edit_refusal(request.model)
        if refusal:
            raise PipelineInputError(f"{refusal} to edit, or generate from a description.")
        yield from tasks.edit(self.workshop, pipeline, request, session)

    def nearest(self, image: np.ndarray | Image.Image | None, k: int = 6) -> tuple[list[Product], str]:
        """The closest real training products to an image, and a sentence on how close they are."""
        if self.products is None:
            raise PipelineInputError("No product index is loaded: start the app with --products DATASET "
                                     "(e.g. ../shared/data/fashion-products) to search real products.")
        if image is None:
            raise PipelineInputError("Choose an image first: upload one or send a generated image here.")
        products = self.products.get() if isinstance(self.products, BackgroundIndex) else self.products  # ready yet?
        k = check_count(k, "Number of products", 1, self.limits.max_neighbours)
        array = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
        if array.ndim == 2:
            array = np.repeat(array[..., None], 3, axis=-1)
        if array.ndim != 3 or array.shape[-1] not in (3, 4):
            raise PipelineInputError(f"Expected a colour image, got an array of shape {array.shape}.")
        array = np.ascontiguousarray(array[..., :3].astype(np.uint8))
        found = self.compute.run(products.search, array, k)
        top = found[0].similarity if found else float("nan")
        verdict = products.novelty(top)
        return found, f"Closest product: similarity {top:.3f}. {verdict}"


__all__ = ["Studio", "model_names"]
