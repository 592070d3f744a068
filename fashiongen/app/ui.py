"""The Gradio app: Generate, Interpolate, Edit and Nearest products, over one loaded pipeline.

    demo = build_demo(FashionGenPipeline.from_pretrained("runs/001-small64/export"), ProductIndex.build(...))
    demo.launch(server_name="127.0.0.1", server_port=7860)

Every model endpoint has a stable api_name for gradio_client ("generate", "interpolate", "edit",
"nearest"); the model endpoints share one concurrency limit (on a CPU, two jobs at once only split
its cores) and a bounded queue. Bad input comes back as a Gradio message, never a stack trace.
"""

from __future__ import annotations

import base64
import functools
import logging
from collections.abc import Callable, Iterator
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from ..pipeline import FashionGenPipeline, check_mask_shape
from ..settings import DEFAULT_GUIDANCE, DEFAULT_SAMPLER, DEFAULT_STEPS, PipelineInputError
from .products import ProductIndex
from .service import ANY, ATTRIBUTES, EditRequest, GenerateRequest, InterpolateRequest, Limits, Studio, Update

logger = logging.getLogger("fashiongen.app")

MODEL_JOBS = "model"  # concurrency group of the endpoints that run the generator
INTRO = ("Describe a garment and get designs in seconds; explore between two designs; restyle a photo; "
         "and check which real products a design is closest to.")


def _messages(function: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
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


def _session(request: gr.Request | None) -> str:
    return getattr(request, "session_hash", None) or "local"


def _report(progress: gr.Progress, update: Update) -> None:
    done, total = update.progress
    progress(done / max(total, 1), desc=update.status.split("\n")[0])


def _strip(images: list[Image.Image]) -> Image.Image:
    """Frames side by side (previews of an interpolation before its strip.png exists)."""
    return Image.fromarray(np.concatenate([np.asarray(image.convert("RGB")) for image in images], axis=1))


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


def editor_parts(value: Any) -> tuple[np.ndarray | None, np.ndarray | None]:
    """An ImageEditor value -> (photo uint8 [H, W, 3] or None, mask bool [H, W] of drawn strokes or None)."""
    if value is None:
        return None, None
    if isinstance(value, np.ndarray):
        return _rgb(value), None
    background = value.get("background") if isinstance(value, dict) else None
    if background is None:
        background = value.get("composite") if isinstance(value, dict) else None
    if background is None:
        return None, None
    photo = _rgb(np.asarray(background))
    mask = np.zeros(photo.shape[:2], dtype=bool)
    for layer in value.get("layers") or []:
        layer = np.asarray(layer)
        if layer.shape[:2] != mask.shape:  # a layer of another size: fitted when its proportions match, else refused
            check_mask_shape(mask.shape, layer.shape)
            layer = np.asarray(Image.fromarray(layer).resize(mask.shape[::-1], Image.Resampling.NEAREST))
        mask |= (layer[..., 3] > 0) if layer.ndim == 3 and layer.shape[-1] == 4 else (layer.reshape(*mask.shape, -1).max(-1) > 0)
    return photo, (mask if mask.any() else None)


def _rgb(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.shape[-1] == 4:  # transparent parts on white, as product photos are
        alpha = array[..., 3:4].astype(np.float32) / 255.0
        array = (array[..., :3] * alpha + 255.0 * (1 - alpha)).round()
    return np.ascontiguousarray(array[..., :3].astype(np.uint8))


def _examples(studio: Studio, examples: list[dict[str, Any]] | None) -> list[list[str]]:
    """Example rows for the Generate tab: [description, category, gender, colour, season]."""
    if not examples:
        prompts = studio.pipeline.stages[0].info.validation_prompts
        examples = [{"caption": prompt, "attributes": {}} for prompt in prompts]
    choices = studio.attribute_choices
    rows = []
    for example in examples:
        wanted = example.get("attributes", {})
        rows.append([example["caption"]] + [str(wanted.get(name)) if str(wanted.get(name)) in choices[name] else ANY
                                            for name in ATTRIBUTES])
    return rows


def build_demo(pipeline: FashionGenPipeline, neighbours: ProductIndex | None = None, *,
               examples: list[dict[str, Any]] | None = None, limits: Limits = Limits(), concurrency: int = 1,
               max_queue: int = 32, output_dir: str | None = None) -> gr.Blocks:
    """The app over a loaded pipeline; `neighbours` enables the Nearest products tab; `examples` are dataset captions
    ({"caption", "attributes"}) shown under the description (default: the model's validation prompts).

    Uploads are bounded by `limits`: files over max_upload_mb are refused while they arrive (the returned demo's
    launch sets Gradio's max_file_size), images over max_upload_pixels before they are decoded."""
    studio = Studio(pipeline, neighbours, limits, output_dir)
    choices = studio.attribute_choices
    samplers = studio.samplers
    deterministic = studio.deterministic_samplers
    default_sampler = DEFAULT_SAMPLER if DEFAULT_SAMPLER in samplers else samplers[0]  # the model's family decides

    @_messages
    def generate(description: str, negative: str, category: str, gender: str, colour: str, season: str, num_images: float,
                 steps: float, guidance: float, sampler: str, seed: float, random_seed: bool,
                 request: gr.Request = None, progress: gr.Progress = gr.Progress()) -> Iterator[tuple[Any, ...]]:
        attributes = dict(zip(ATTRIBUTES, (category, gender, colour, season)))
        job = GenerateRequest(description, negative or "", attributes, num_images, steps, guidance, sampler,
                              0 if seed is None else seed, bool(random_seed))
        for update in studio.generate(job, _session(request)):
            _report(progress, update)
            if update.done:
                yield update.images, update.status, update.files, update.extra.get("seed", gr.skip())
            else:
                yield update.images, update.status, gr.skip(), gr.skip()

    @_messages
    def interpolate(description_a: str, description_b: str, seed_a: float, seed_b: float, frames: float, steps: float,
                    guidance: float, sampler: str, request: gr.Request = None,
                    progress: gr.Progress = gr.Progress()) -> Iterator[tuple[Any, ...]]:
        job = InterpolateRequest(description_a, description_b, seed_a, seed_b, frames, steps, guidance, sampler)
        for update in studio.interpolate(job, _session(request)):
            _report(progress, update)
            if update.done and "gif" in update.extra:
                yield update.extra["strip"], update.extra["gif"], update.status, update.files
            elif update.images:
                yield _strip([image for image, _ in update.images]), gr.skip(), update.status, gr.skip()
            else:
                yield gr.skip(), gr.skip(), update.status, gr.skip()

    @_messages
    def edit(editor: Any, description: str, strength: float, num_images: float, steps: float, guidance: float,
             sampler: str, seed: float, request: gr.Request = None,
             progress: gr.Progress = gr.Progress()) -> Iterator[tuple[Any, ...]]:
        photo, mask = editor_parts(editor)
        job = EditRequest(photo, description, mask, strength, num_images, steps, guidance, sampler, 0 if seed is None else seed)
        for update in studio.edit(job, _session(request)):
            _report(progress, update)
            yield update.images, update.status, update.files if update.done else gr.skip()

    @_messages
    def nearest(image: np.ndarray | None, count: float) -> Iterator[tuple[Any, ...]]:
        found, verdict = studio.nearest(image, count)
        yield [(Image.fromarray(product.image), product.label) for product in found], verdict

    def cancel(request: gr.Request = None) -> str:
        stopped = studio.cancel(_session(request))
        return "Stopping…" if stopped else "Nothing is running."

    def selected_image(images: list[Any] | None, index: int | None) -> str | None:
        if not images:
            return None
        item = images[index if index is not None and 0 <= index < len(images) else 0]
        return item[0] if isinstance(item, (tuple, list)) else item

    def on_select(event: gr.SelectData) -> int:
        return int(event.index)

    def send_to_edit(images: list[Any] | None, index: int | None) -> tuple[Any, Any]:
        path = selected_image(images, index)
        if path is None:
            raise gr.Error("Generate an image first, then pick it in the gallery.", title="Nothing to edit")
        return {"background": path, "layers": [], "composite": path}, gr.Tabs(selected="edit")

    def send_to_nearest(images: list[Any] | None, index: int | None) -> tuple[Any, Any]:
        path = selected_image(images, index)
        if path is None:
            raise gr.Error("Generate an image first, then pick it in the gallery.", title="Nothing to search for")
        return path, gr.Tabs(selected="nearest")

    # Uploads (and results) in Gradio's cache are deleted after an hour, checked every 10 minutes, and at shutdown.
    with gr.Blocks(title="FashionGen", analytics_enabled=False, delete_cache=(600, 3600)) as demo:
        gr.Markdown(f"# FashionGen\n{INTRO}\n\n*Model: {studio.describe_model()}*")
        chosen = gr.State(None)  # index of the picked gallery image
        with gr.Tabs() as tabs:
            with gr.Tab("Generate", id="generate"):
                with gr.Row():
                    with gr.Column(scale=2):
                        description = gr.Textbox(label="Description", lines=3, elem_id="description",
                                                 placeholder="e.g. red floral summer dress")
                        negative = gr.Textbox(label="Negative description (optional)", placeholder="what to avoid, e.g. stripes")
                        with gr.Row():
                            dropdowns = [gr.Dropdown(choices[name], value=ANY, label=name.capitalize(),
                                                     visible=len(choices[name]) > 1, elem_id=f"attribute-{name}")
                                         for name in ATTRIBUTES]
                        num_images = gr.Slider(1, limits.max_images, value=4, step=1, label="Images")
                        with gr.Accordion("Sampling", open=False):
                            steps = gr.Slider(limits.sampling.min_steps, limits.sampling.max_steps, value=DEFAULT_STEPS, step=1, label="Steps")
                            guidance = gr.Slider(0, limits.sampling.max_guidance, value=DEFAULT_GUIDANCE, step=0.5, label="Guidance scale")
                            sampler = gr.Dropdown(samplers, value=default_sampler, label="Sampler")
                        with gr.Row():
                            seed = gr.Number(value=0, precision=0, minimum=0, label="Seed (image k gets seed + k)")
                            random_seed = gr.Checkbox(value=True, label="Random seed")
                        with gr.Row():
                            run = gr.Button("Generate", variant="primary", elem_id="generate-button")
                            stop = gr.Button("Stop", variant="stop", elem_id="stop-button")
                        example_rows = _examples(studio, examples)
                        if example_rows:
                            gr.Examples(example_rows, inputs=[description, *dropdowns], label="Descriptions from the dataset")
                    with gr.Column(scale=3):
                        gallery = gr.Gallery(label="Designs", columns=4, format="png", elem_id="gallery", height=420,
                                             object_fit="contain")
                        status = gr.Markdown(elem_id="status")
                        with gr.Row():
                            to_edit = gr.Button("Edit the selected design")
                            to_nearest = gr.Button("Nearest real products", interactive=neighbours is not None)
                        files = gr.File(label="Downloads: images and settings.json", file_count="multiple", elem_id="downloads")

            with gr.Tab("Interpolate", id="interpolate"):
                with gr.Row():
                    description_a = gr.Textbox(label="First description", lines=2)
                    description_b = gr.Textbox(label="Second description", lines=2)
                with gr.Row():
                    seed_a = gr.Number(value=0, precision=0, minimum=0, label="First seed")
                    seed_b = gr.Number(value=1, precision=0, minimum=0, label="Second seed")
                    frames = gr.Slider(2, limits.max_frames, value=8, step=1, label="Frames")
                with gr.Accordion("Sampling", open=False):
                    steps_i = gr.Slider(limits.sampling.min_steps, limits.sampling.max_steps, value=DEFAULT_STEPS, step=1, label="Steps")
                    guidance_i = gr.Slider(0, limits.sampling.max_guidance, value=DEFAULT_GUIDANCE, step=0.5, label="Guidance scale")
                    sampler_i = gr.Dropdown(deterministic, value=default_sampler, label="Sampler (deterministic)")
                run_i = gr.Button("Interpolate", variant="primary", elem_id="interpolate-button")
                strip = gr.Image(label="Frames", type="filepath", elem_id="strip", interactive=False)
                gif = gr.Image(label="Animation", type="filepath", format="gif", elem_id="animation", interactive=False)
                status_i = gr.Markdown()
                files_i = gr.File(label="Downloads: GIF, strip and settings.json", file_count="multiple")

            with gr.Tab("Edit", id="edit"):
                with gr.Row():
                    with gr.Column():
                        editor = gr.ImageEditor(label="Photo: upload one (or send a design here); paint over what to change",
                                                type="numpy", sources=("upload", "clipboard"), elem_id="editor",
                                                brush=gr.Brush(colors=["#ff00ff"], default_size=12))
                        read_uploads_checked(editor, studio)
                        description_e = gr.Textbox(label="New description", lines=2)
                        strength = gr.Slider(0.0, 1.0, value=0.6, step=0.05,
                                             label="Strength (0 keeps the photo, 1 ignores it; with a painted mask only that part changes)")
                        with gr.Row():
                            num_images_e = gr.Slider(1, limits.max_images, value=2, step=1, label="Images")
                            seed_e = gr.Number(value=0, precision=0, minimum=0, label="Seed")
                        with gr.Accordion("Sampling", open=False):
                            steps_e = gr.Slider(limits.sampling.min_steps, limits.sampling.max_steps, value=DEFAULT_STEPS, step=1, label="Steps")
                            guidance_e = gr.Slider(0, limits.sampling.max_guidance, value=DEFAULT_GUIDANCE, step=0.5, label="Guidance scale")
                            sampler_e = gr.Dropdown(samplers, value=default_sampler, label="Sampler")
                        run_e = gr.Button("Edit", variant="primary", elem_id="edit-button")
                    with gr.Column():
                        gallery_e = gr.Gallery(label="Edits", columns=2, format="png", object_fit="contain")
                        status_e = gr.Markdown()
                        files_e = gr.File(label="Downloads", file_count="multiple")

            with gr.Tab("Nearest products", id="nearest"):
                if neighbours is None:
                    gr.Markdown("No product index is loaded. Start the app with `--products DATASET` "
                                "(e.g. `../shared/data/fashion-products`) to search the real training products.")
                else:
                    gr.Markdown(f"Searches {len(neighbours):,} real training products by the critic network's image "
                                "embedding, so you can see whether a design is new.")
                with gr.Row():
                    query = gr.Image(label="Design", type="numpy", sources=("upload", "clipboard"), elem_id="query")
                    read_uploads_checked(query, studio)
                    with gr.Column():
                        count = gr.Slider(1, limits.max_neighbours, value=6, step=1, label="Products")
                        run_n = gr.Button("Find nearest products", variant="primary", interactive=neighbours is not None)
                verdict = gr.Markdown()
                gallery_n = gr.Gallery(label="Nearest real products", columns=6, format="jpeg", object_fit="contain")

        model_job = dict(concurrency_id=MODEL_JOBS, concurrency_limit=concurrency, show_progress_on=[status])
        event = run.click(generate, [description, negative, *dropdowns, num_images, steps, guidance, sampler, seed, random_seed],
                          [gallery, status, files, seed], api_name="generate", **model_job)
        submitted = description.submit(generate, [description, negative, *dropdowns, num_images, steps, guidance, sampler, seed,
                                      random_seed], [gallery, status, files, seed], api_visibility="private", **model_job)
        stop.click(cancel, None, status, cancels=[event, submitted], api_name="cancel", queue=False)
        gallery.select(on_select, None, chosen, api_visibility="private", queue=False)
        to_edit.click(send_to_edit, [gallery, chosen], [editor, tabs], api_visibility="private", queue=False)
        to_nearest.click(send_to_nearest, [gallery, chosen], [query, tabs], api_visibility="private", queue=False)
        run_i.click(interpolate, [description_a, description_b, seed_a, seed_b, frames, steps_i, guidance_i, sampler_i],
                    [strip, gif, status_i, files_i], api_name="interpolate", **{**model_job, "show_progress_on": [status_i]})
        run_e.click(edit, [editor, description_e, strength, num_images_e, steps_e, guidance_e, sampler_e, seed_e],
                    [gallery_e, status_e, files_e], api_name="edit", **{**model_job, "show_progress_on": [status_e]})
        run_n.click(nearest, [query, count], [gallery_n, verdict], api_name="nearest", concurrency_limit=4)
    demo.queue(max_size=max_queue, default_concurrency_limit=concurrency)
    # The upload limit is a launch setting in Gradio; it comes with the demo so no launch forgets it (a caller may override).
    demo.launch = functools.partial(demo.launch, max_file_size=f"{limits.max_upload_mb}mb")
    demo.studio = studio  # for scripts and tests: the service behind the page
    return demo


__all__ = ["build_demo", "editor_parts"]
