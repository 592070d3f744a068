"""The Gradio app: Generate, Interpolate, Edit and Nearest products, over one or more loaded pipelines.

    demo = build_demo(FashionGenPipeline.from_pretrained("runs/001-small64/export"), ProductIndex.build(...))
    demo = build_demo({"diffusion": diffusion_pipeline, "gan": gan_pipeline})   # a model choice on the page
    demo.launch(server_name="127.0.0.1", server_port=7860)

Every model endpoint has a stable api_name for gradio_client ("generate", "interpolate", "edit",
"nearest"); the model endpoints share one concurrency limit (on a CPU, two jobs at once only split
its cores) and a bounded queue. Bad input comes back as a Gradio message, never a stack trace.

The page shows the controls of the chosen model: steps, guidance, sampler and a negative description for
diffusion; truncation for a GAN. A one-forward model (a GAN) can regenerate live (live.py). Each tab is built, and
its events wired, by its own module (generate.py, interpolate.py, edit.py, nearest.py) from the shared page.py.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import gradio as gr

from ...pipeline import FashionGenPipeline
from ..checks import Limits
from ..compute import ComputeThread
from ..indexing import BackgroundIndex
from ..products import ProductIndex
from ..studio import Studio
from ..uploads import editor_parts
from .edit import EditTab
from .generate import GenerateTab
from .interpolate import InterpolateTab
from .live import LIVE_DEBOUNCE_S
from .nearest import NearestTab
from .page import Page

INTRO = ("Describe a garment and get designs in seconds; explore between two designs; restyle a photo; "
         "and check which real products a design is closest to.")


def build_demo(pipeline: FashionGenPipeline | Mapping[str, FashionGenPipeline],
               neighbours: ProductIndex | BackgroundIndex | None = None, *,
               examples: list[dict[str, Any]] | None = None, limits: Limits = Limits(), concurrency: int = 1,
               max_queue: int = 32, output_dir: str | None = None, compute: ComputeThread | None = None) -> gr.Blocks:
    """The app over one loaded pipeline or several by name (the first is the default; the page offers the choice);
    `neighbours` enables the Nearest products tab (a BackgroundIndex: the tab says how far its build is until it is
    ready); `examples` are dataset captions ({"caption", "attributes"}) shown
    under the description (default: the default model's validation prompts).

    Uploads are bounded by `limits`: files over max_upload_mb are refused while they arrive (the returned demo's
    launch sets Gradio's max_file_size), images over max_upload_pixels before they are decoded.
    `compute`: the thread the pipelines were loaded on, which samples with them (app/compute.py; default: a new one)."""
    studio = Studio(pipeline, neighbours, limits, output_dir, concurrency, compute)
    page = Page.of(studio, limits, concurrency)
    # Uploads (and results) in Gradio's cache are deleted after an hour, checked every 10 minutes, and at shutdown.
    with gr.Blocks(title="FashionGen", analytics_enabled=False, delete_cache=(600, 3600)) as demo:
        gr.Markdown(_header(studio))
        model = page.checks.build("model", value=studio.models[0], elem_id="model", visible=len(studio.models) > 1)
        chosen = gr.State(None)  # index of the picked gallery image
        live_token = gr.State(0)  # set by live_tick after a pause in changes; live_generate makes each new one once
        with gr.Tabs() as tabs:
            generate = GenerateTab.build(page, model, examples)
            interpolate = InterpolateTab.build(page)
            edit = EditTab.build(page)
            nearest = NearestTab.build(page)
        generate.wire(live_token)
        switching = (generate, interpolate, edit)
        model.change(_model_switch(switching), model, [output for tab in switching for output in tab.model_outputs()],
                     api_visibility="private", queue=False)
        generate.wire_picks(chosen, edit.editor, nearest.query, tabs)
        interpolate.wire(model)
        edit.wire(model)
        nearest.wire()
    page.checks.install(demo)
    demo.queue(max_size=max_queue, default_concurrency_limit=concurrency)
    # The upload limit is a launch setting in Gradio; it comes with the demo so no launch forgets it (a caller may override).
    demo.launch = functools.partial(demo.launch, max_file_size=f"{limits.max_upload_mb}mb")
    demo.studio = studio  # for scripts and tests: the service behind the page
    return demo


def _model_switch(tabs: tuple[GenerateTab, InterpolateTab, EditTab]) -> Callable[[str | None], tuple[Any, ...]]:
    def switch_model(model: str | None) -> tuple[Any, ...]:
        """The controls of the chosen model: shown, hidden, their choices and defaults."""
        return tuple(update for tab in tabs for update in tab.model_updates(model))

    return switch_model


def _header(studio: Studio) -> str:
    lines = [f"# FashionGen\n{INTRO}\n"]
    lines += [f"*Model{'s' if len(studio.models) > 1 else ''}:*"] if len(studio.models) > 1 else []
    lines += [f"- **{name}**: {studio.describe_model(name)}" if len(studio.models) > 1 else f"*Model: {studio.describe_model(name)}*"
              for name in studio.models]
    return "\n".join(lines)


__all__ = ["LIVE_DEBOUNCE_S", "build_demo", "editor_parts"]
