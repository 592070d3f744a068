"""The Interpolate tab: two (description, seed) designs and the frames between them, as a strip and a looping GIF."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from ...settings import DEFAULT_GUIDANCE
from ..checks import InterpolateRequest
from .page import Page, messages, report, session_of


@dataclass
class InterpolateTab:
    """The tab's components (those events need) and its handler."""

    page: Page
    description_a: gr.Textbox
    description_b: gr.Textbox
    seed_a: gr.Number
    seed_b: gr.Number
    frames: gr.Slider
    steps: gr.Slider
    guidance: gr.Slider
    sampler: gr.Dropdown
    truncation: gr.Slider
    run: gr.Button
    strip: gr.Image
    gif: gr.Image
    status: gr.Markdown
    files: gr.File

    @classmethod
    def build(cls, page: Page) -> InterpolateTab:
        checks, first = page.checks, page.first
        with gr.Tab("Interpolate", id="interpolate"):
            with gr.Row():
                description_a = checks.build("description_a", lines=2)
                description_b = checks.build("description_b", lines=2)
            with gr.Row():
                seed_a = checks.build("seed_a", value=0)
                seed_b = checks.build("seed_b", value=1)
                frames = checks.build("frames", value=8)
            with gr.Accordion("Sampling", open=False):
                steps = checks.build("steps", value=first["default_steps"], visible=first["steps"])
                guidance = checks.build("guidance", value=DEFAULT_GUIDANCE, visible=first["guidance"])
                sampler = checks.build("deterministic_sampler", value=first["default_sampler"],
                                       visible=len(first["deterministic_samplers"]) > 1)
                truncation = checks.build("interpolation_truncation", value=page.start_truncation, visible=first["truncation"])
            run = gr.Button("Interpolate", variant="primary", elem_id="interpolate-button")
            strip = gr.Image(label="Frames", type="filepath", elem_id="strip", interactive=False)
            gif = gr.Image(label="Animation", type="filepath", format="gif", elem_id="animation", interactive=False)
            status = gr.Markdown()
            files = gr.File(label="Downloads: GIF, strip and settings.json", file_count="multiple")
        return cls(page, description_a, description_b, seed_a, seed_b, frames, steps, guidance, sampler, truncation, run,
                   strip, gif, status, files)

    def wire(self, model: gr.components.Component) -> None:
        self.run.click(self.interpolate, [self.description_a, self.description_b, self.seed_a, self.seed_b, self.frames,
                                          self.steps, self.guidance, self.sampler, model, self.truncation],
                       [self.strip, self.gif, self.status, self.files], api_name="interpolate", **self.page.model_job(self.status))

    def model_outputs(self) -> list[Any]:
        """The components a model change updates, in model_updates' order."""
        return [self.steps, self.guidance, self.sampler, self.truncation]

    def model_updates(self, model: str | None) -> list[Any]:
        c = self.page.controls(model)
        deterministic = c["deterministic_samplers"]
        return [gr.update(visible=c["steps"], value=c["default_steps"]), gr.update(visible=c["guidance"]),
                gr.update(choices=deterministic, value=c["default_sampler"], visible=len(deterministic) > 1),
                gr.update(visible=c["truncation"], value=c["default_truncation"])]

    @messages
    def interpolate(self, description_a: str, description_b: str, seed_a: float, seed_b: float, frames: float, steps: float,
                    guidance: float, sampler: str, model: str | None = None, truncation: float | None = None,
                    request: gr.Request = None, progress: gr.Progress = gr.Progress()) -> Iterator[tuple[Any, ...]]:
        controls = self.page.controls(model)
        job = InterpolateRequest(description_a, description_b, seed_a, seed_b, frames, steps, guidance,
                                 sampler if sampler in controls["samplers"] else None, model or None,
                                 self.page.truncation(model, truncation))
        for update in self.page.studio.interpolate(job, session_of(request)):
            report(progress, update)
            if update.done and "gif" in update.extra:
                yield update.extra["strip"], update.extra["gif"], update.status, update.files
            elif update.images:
                yield _strip([image for image, _ in update.images]), gr.skip(), update.status, gr.skip()
            else:
                yield gr.skip(), gr.skip(), update.status, gr.skip()


def _strip(images: list[Image.Image]) -> Image.Image:
    """Frames side by side (previews of an interpolation before its strip.png exists)."""
    return Image.fromarray(np.concatenate([np.asarray(image.convert("RGB")) for image in images], axis=1))


__all__ = ["InterpolateTab"]
