"""The Gradio app: Generate, Interpolate, Edit and Nearest products, over one or more loaded pipelines.

    demo = build_demo(FashionGenPipeline.from_pretrained("runs/001-small64/export"), ProductIndex.build(...))
    demo = build_demo({"diffusion": diffusion_pipeline, "gan": gan_pipeline})   # a model choice on the page
    demo.launch(server_name="127.0.0.1", server_port=7860)

Every model endpoint has a stable api_name for gradio_client ("generate", "interpolate", "edit",
"nearest"); the model endpoints share one concurrency limit (on a CPU, two jobs at once only split
its cores) and a bounded queue. Bad input comes back as a Gradio message, never a stack trace.

The page shows the controls of the chosen model: steps, guidance, sampler and a negative description for
diffusion; truncation for a GAN. A one-forward model (a GAN) can regenerate live as the description, an
attribute, the seed or a slider changes: changes are debounced (LIVE_DEBOUNCE_S after the last one) and only
the newest waits while one runs.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import itertools
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from ..pipeline import FashionGenPipeline, check_mask_shape
from ..settings import DEFAULT_GUIDANCE, PipelineInputError
from .compute import ComputeThread
from .products import ProductIndex
from .requests import RequestChecks, request_fields
from .service import ANY, ATTRIBUTES, EditRequest, GenerateRequest, InterpolateRequest, Limits, Studio, Update

logger = logging.getLogger("fashiongen.app")

MODEL_JOBS = "model"  # concurrency group of the endpoints that run the generator
LIVE_DEBOUNCE_S = 0.3  # live regeneration starts this long after the last change (typing pauses are longer)
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


def _header(studio: Studio) -> str:
    lines = [f"# FashionGen\n{INTRO}\n"]
    lines += [f"*Model{'s' if len(studio.models) > 1 else ''}:*"] if len(studio.models) > 1 else []
    lines += [f"- **{name}**: {studio.describe_model(name)}" if len(studio.models) > 1 else f"*Model: {studio.describe_model(name)}*"
              for name in studio.models]
    return "\n".join(lines)


def build_demo(pipeline: FashionGenPipeline | Mapping[str, FashionGenPipeline], neighbours: ProductIndex | None = None, *,
               examples: list[dict[str, Any]] | None = None, limits: Limits = Limits(), concurrency: int = 1,
               max_queue: int = 32, output_dir: str | None = None, compute: ComputeThread | None = None) -> gr.Blocks:
    """The app over one loaded pipeline or several by name (the first is the default; the page offers the choice);
    `neighbours` enables the Nearest products tab; `examples` are dataset captions ({"caption", "attributes"}) shown
    under the description (default: the default model's validation prompts).

    Uploads are bounded by `limits`: files over max_upload_mb are refused while they arrive (the returned demo's
    launch sets Gradio's max_file_size), images over max_upload_pixels before they are decoded.
    `compute`: the thread the pipelines were loaded on, which samples with them (app/compute.py; default: a new one)."""
    studio = Studio(pipeline, neighbours, limits, output_dir, concurrency, compute)
    choices = studio.attribute_choices
    controls_of = {name: studio.controls(name) for name in studio.models}  # fixed while the app runs: computed once

    def model_controls(model: str | None) -> dict[str, Any]:
        if model not in (None, "") and model not in controls_of:
            studio.model(model)  # raises the refusal naming the loaded models
        return controls_of[model or studio.models[0]]

    first = model_controls(None)
    truncating = [c for c in controls_of.values() if c["truncation"]]
    start_truncation = truncating[0]["default_truncation"] if truncating else 1.0  # what an API call without one gets
    # the dropdowns accept every loaded model's samplers (Gradio checks a value against the choices it started with);
    # the page narrows them to the chosen model's
    all_samplers = list(dict.fromkeys(name for model in studio.models for name in controls_of[model]["samplers"]))
    all_deterministic = list(dict.fromkeys(name for model in studio.models
                                           for name in controls_of[model]["deterministic_samplers"]))
    all_attributes = {name: list(dict.fromkeys(value for model in studio.models
                                               for value in studio.attribute_choices_for(model)[name])) for name in ATTRIBUTES}
    # one table builds the input components and checks every request against them first (app/requests.py)
    checks = RequestChecks(request_fields(limits, studio.models, all_attributes, all_samplers, all_deterministic))
    live_tokens: dict[str, int] = {}  # per visitor: the newest live change, so only the last of a burst runs
    live_done: dict[str, int] = {}  # per visitor: the token last generated, so a burst's followers generate nothing
    live_lock = threading.Lock()
    counter = itertools.count(1)

    def _truncation(model: str | None, value: float | None) -> float | None:
        return value if model_controls(model)["truncation"] and value is not None else None

    @_messages
    def generate(description: str, negative: str, category: str, gender: str, colour: str, season: str, num_images: float,
                 steps: float, guidance: float, sampler: str, seed: float, random_seed: bool, model: str | None = None,
                 truncation: float | None = None, request: gr.Request = None,
                 progress: gr.Progress = gr.Progress()) -> Iterator[tuple[Any, ...]]:
        attributes = dict(zip(ATTRIBUTES, (category, gender, colour, season)))
        controls = model_controls(model)
        job = GenerateRequest(description, (negative or "") if controls["negative"] else "", attributes, num_images, steps,
                              guidance, sampler if sampler in controls["samplers"] else None, 0 if seed is None else seed,
                              bool(random_seed), model or None, _truncation(model, truncation))
        for update in studio.generate(job, _session(request)):
            _report(progress, update)
            if update.done:
                yield update.images, update.status, update.files, update.extra.get("seed", gr.skip())
            else:
                yield update.images, update.status, gr.skip(), gr.skip()

    async def live_tick(live: bool, model: str | None, request: gr.Request = None) -> Any:
        """A change on the page while Live is on: after LIVE_DEBOUNCE_S, a new token in the hidden state if no later
        change came, else nothing (the state keeps the token live_generate has already made)."""
        if not live or not model_controls(model)["live"]:
            return gr.skip()
        session = _session(request)
        token = live_tokens[session] = next(counter)
        await asyncio.sleep(LIVE_DEBOUNCE_S)
        return token if live_tokens.get(session) == token else gr.skip()

    def live_generate(description: str, negative: str, category: str, gender: str, colour: str, season: str,
                      num_images: float, steps: float, guidance: float, sampler: str, seed: float, random_seed: bool,
                      model: str | None, truncation: float | None, token: int,
                      request: gr.Request = None) -> Iterator[tuple[Any, ...]]:
        """Runs after every tick; generates once per new token (the first follower of a burst), with the page's values
        as they are now."""
        session = _session(request)
        with live_lock:
            fresh = bool(token) and live_done.get(session) != token
            if fresh:
                live_done[session] = token
        if not fresh or not (description or "").strip():
            yield gr.skip(), gr.skip(), gr.skip(), gr.skip()
            return
        # the seed stays put while the description changes, so the same garment follows the words
        yield from generate(description, negative, category, gender, colour, season, num_images, steps, guidance, sampler,
                            seed, False, model, truncation, request, progress=lambda *args, **kwargs: None)

    def switch_model(model: str | None) -> tuple[Any, ...]:
        """The controls of the chosen model: shown, hidden, their choices and defaults."""
        c = model_controls(model)
        attribute_choices = studio.attribute_choices_for(model or None)
        samplers, deterministic = c["samplers"], c["deterministic_samplers"]
        refusal = studio.edit_refusal(model or None)
        note = f"*{refusal} above to edit.*" if refusal else ""
        return (gr.update(visible=c["steps"], value=c["default_steps"]), gr.update(visible=c["guidance"]),
                gr.update(choices=samplers, value=c["default_sampler"], visible=len(samplers) > 1),
                gr.update(visible=c["negative"]), gr.update(visible=c["truncation"], value=c["default_truncation"]),
                gr.update(visible=c["live"], value=c["live"]),
                *[gr.update(choices=attribute_choices[name], value=ANY, visible=len(attribute_choices[name]) > 1) for name in ATTRIBUTES],
                gr.update(visible=c["steps"], value=c["default_steps"]), gr.update(visible=c["guidance"]),
                gr.update(choices=deterministic, value=c["default_sampler"], visible=len(deterministic) > 1),
                gr.update(visible=c["truncation"], value=c["default_truncation"]),
                gr.update(visible=c["steps"], value=c["default_steps"]), gr.update(visible=c["guidance"]),
                gr.update(choices=samplers, value=c["default_sampler"], visible=len(samplers) > 1),
                gr.update(interactive=c["can_edit"]), note)

    @_messages
    def interpolate(description_a: str, description_b: str, seed_a: float, seed_b: float, frames: float, steps: float,
                    guidance: float, sampler: str, model: str | None = None, truncation: float | None = None,
                    request: gr.Request = None, progress: gr.Progress = gr.Progress()) -> Iterator[tuple[Any, ...]]:
        controls = model_controls(model)
        job = InterpolateRequest(description_a, description_b, seed_a, seed_b, frames, steps, guidance,
                                 sampler if sampler in controls["samplers"] else None, model or None, _truncation(model, truncation))
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
             sampler: str, seed: float, model: str | None = None, request: gr.Request = None,
             progress: gr.Progress = gr.Progress()) -> Iterator[tuple[Any, ...]]:
        photo, mask = editor_parts(editor)
        job = EditRequest(photo, description, mask, strength, num_images, steps, guidance, sampler, 0 if seed is None else seed,
                          model or None)
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
        gr.Markdown(_header(studio))
        model = checks.build("model", value=studio.models[0], elem_id="model", visible=len(studio.models) > 1)
        chosen = gr.State(None)  # index of the picked gallery image
        live_token = gr.State(0)  # set by live_tick after a pause in changes; live_generate makes each new one once
        with gr.Tabs() as tabs:
            with gr.Tab("Generate", id="generate"):
                with gr.Row():
                    with gr.Column(scale=2):
                        description = checks.build("description", lines=3, elem_id="description",
                                                   placeholder="e.g. red floral summer dress")
                        negative = checks.build("negative", placeholder="what to avoid, e.g. stripes", visible=first["negative"],
                                                elem_id="negative")
                        with gr.Row():
                            dropdowns = [checks.build(name, value=ANY, visible=len(choices[name]) > 1, elem_id=f"attribute-{name}")
                                         for name in ATTRIBUTES]
                        num_images = checks.build("num_images", value=4)
                        with gr.Accordion("Sampling", open=False):
                            steps = checks.build("steps", value=first["default_steps"], visible=first["steps"], elem_id="steps")
                            guidance = checks.build("guidance", value=DEFAULT_GUIDANCE, visible=first["guidance"],
                                                    elem_id="guidance")
                            sampler = checks.build("sampler", value=first["default_sampler"], visible=len(first["samplers"]) > 1,
                                                   elem_id="sampler")
                        truncation = checks.build("truncation", value=start_truncation, visible=first["truncation"],
                                                  elem_id="truncation")
                        with gr.Row():
                            seed = checks.build("seed", value=0)
                            random_seed = checks.build("random_seed", value=True)
                            live = checks.build("live", value=first["live"], visible=first["live"], elem_id="live")
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
                    description_a = checks.build("description_a", lines=2)
                    description_b = checks.build("description_b", lines=2)
                with gr.Row():
                    seed_a = checks.build("seed_a", value=0)
                    seed_b = checks.build("seed_b", value=1)
                    frames = checks.build("frames", value=8)
                with gr.Accordion("Sampling", open=False):
                    steps_i = checks.build("steps", value=first["default_steps"], visible=first["steps"])
                    guidance_i = checks.build("guidance", value=DEFAULT_GUIDANCE, visible=first["guidance"])
                    sampler_i = checks.build("deterministic_sampler", value=first["default_sampler"],
                                             visible=len(first["deterministic_samplers"]) > 1)
                    truncation_i = checks.build("interpolation_truncation", value=start_truncation, visible=first["truncation"])
                run_i = gr.Button("Interpolate", variant="primary", elem_id="interpolate-button")
                strip = gr.Image(label="Frames", type="filepath", elem_id="strip", interactive=False)
                gif = gr.Image(label="Animation", type="filepath", format="gif", elem_id="animation", interactive=False)
                status_i = gr.Markdown()
                files_i = gr.File(label="Downloads: GIF, strip and settings.json", file_count="multiple")

            with gr.Tab("Edit", id="edit"):
                with gr.Row():
                    with gr.Column():
                        editor = checks.build("photo", type="numpy", sources=("upload", "clipboard"), elem_id="editor",
                                              brush=gr.Brush(colors=["#ff00ff"], default_size=12))
                        read_uploads_checked(editor, studio)
                        description_e = checks.build("new_description", lines=2)
                        strength = checks.build("strength", value=0.6)
                        with gr.Row():
                            num_images_e = checks.build("num_images", value=2)
                            seed_e = checks.build("edit_seed", value=0)
                        with gr.Accordion("Sampling", open=False):
                            steps_e = checks.build("steps", value=first["default_steps"], visible=first["steps"])
                            guidance_e = checks.build("guidance", value=DEFAULT_GUIDANCE, visible=first["guidance"])
                            sampler_e = checks.build("sampler", value=first["default_sampler"], visible=len(first["samplers"]) > 1)
                        edit_note = gr.Markdown(switch_model(None)[-1], elem_id="edit-note")
                        run_e = gr.Button("Edit", variant="primary", elem_id="edit-button", interactive=first["can_edit"])
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
                    query = checks.build("design", type="numpy", sources=("upload", "clipboard"), elem_id="query")
                    read_uploads_checked(query, studio)
                    with gr.Column():
                        count = checks.build("products", value=6)
                        run_n = gr.Button("Find nearest products", variant="primary", interactive=neighbours is not None)
                verdict = gr.Markdown()
                gallery_n = gr.Gallery(label="Nearest real products", columns=6, format="jpeg", object_fit="contain")

        model_job = dict(concurrency_id=MODEL_JOBS, concurrency_limit=concurrency, show_progress_on=[status])
        generate_inputs = [description, negative, *dropdowns, num_images, steps, guidance, sampler, seed, random_seed, model, truncation]
        event = run.click(generate, generate_inputs, [gallery, status, files, seed], api_name="generate", **model_job)
        submitted = description.submit(generate, generate_inputs, [gallery, status, files, seed], api_visibility="private", **model_job)
        live_events = []
        for trigger in (description.input, negative.input, *(d.input for d in dropdowns), num_images.release, seed.input,
                        truncation.release, live.input):
            tick = trigger(live_tick, [live, model], live_token, api_visibility="private", queue=False, show_progress="hidden",
                           trigger_mode="multiple")
            live_events.append(tick.then(live_generate, [*generate_inputs, live_token], [gallery, status, files, seed],
                                         api_visibility="private", show_progress="hidden", concurrency_id=MODEL_JOBS,
                                         concurrency_limit=concurrency))
        stop.click(cancel, None, status, cancels=[event, submitted, *live_events], api_name="cancel", queue=False)
        model.change(switch_model, model, [steps, guidance, sampler, negative, truncation, live, *dropdowns, steps_i, guidance_i,
                                           sampler_i, truncation_i, steps_e, guidance_e, sampler_e, run_e, edit_note],
                     api_visibility="private", queue=False)
        gallery.select(on_select, None, chosen, api_visibility="private", queue=False)
        to_edit.click(send_to_edit, [gallery, chosen], [editor, tabs], api_visibility="private", queue=False)
        to_nearest.click(send_to_nearest, [gallery, chosen], [query, tabs], api_visibility="private", queue=False)
        run_i.click(interpolate, [description_a, description_b, seed_a, seed_b, frames, steps_i, guidance_i, sampler_i, model,
                                  truncation_i],
                    [strip, gif, status_i, files_i], api_name="interpolate", **{**model_job, "show_progress_on": [status_i]})
        run_e.click(edit, [editor, description_e, strength, num_images_e, steps_e, guidance_e, sampler_e, seed_e, model],
                    [gallery_e, status_e, files_e], api_name="edit", **{**model_job, "show_progress_on": [status_e]})
        run_n.click(nearest, [query, count], [gallery_n, verdict], api_name="nearest", concurrency_limit=4)
    checks.install(demo)
    demo.queue(max_size=max_queue, default_concurrency_limit=concurrency)
    # The upload limit is a launch setting in Gradio; it comes with the demo so no launch forgets it (a caller may override).
    demo.launch = functools.partial(demo.launch, max_file_size=f"{limits.max_upload_mb}mb")
    demo.studio = studio  # for scripts and tests: the service behind the page
    return demo


__all__ = ["build_demo", "editor_parts"]
