"""The Edit tab: a photo (uploaded, or a design sent from Generate), a new description and a strength; with strokes
painted over it, only that region is repainted."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import gradio as gr

from ...settings import DEFAULT_GUIDANCE
from ..checks import EditRequest
from ..uploads import editor_parts
from .page import Page, messages, read_uploads_checked, report, session_of


@dataclass
class EditTab:
    """The tab's components (those events and the Generate tab need) and its handler."""

    page: Page
    editor: gr.ImageEditor
    description: gr.Textbox
    strength: gr.Slider
    num_images: gr.Slider
    seed: gr.Number
    steps: gr.Slider
    guidance: gr.Slider
    sampler: gr.Dropdown
    note: gr.Markdown  # why the chosen model cannot edit, if it cannot
    run: gr.Button
    gallery: gr.Gallery
    status: gr.Markdown
    files: gr.File

    @classmethod
    def build(cls, page: Page) -> EditTab:
        checks, first = page.checks, page.first
        with gr.Tab("Edit", id="edit"):
            with gr.Row():
                with gr.Column():
                    editor = checks.build("photo", type="numpy", sources=("upload", "clipboard"), elem_id="editor",
                                          brush=gr.Brush(colors=["#ff00ff"], default_size=12))
                    read_uploads_checked(editor, page.studio)
                    description = checks.build("new_description", lines=2)
                    strength = checks.build("strength", value=0.6)
                    with gr.Row():
                        num_images = checks.build("num_images", value=2)
                        seed = checks.build("edit_seed", value=0)
                    with gr.Accordion("Sampling", open=False):
                        steps = checks.build("steps", value=first["default_steps"], visible=first["steps"])
                        guidance = checks.build("guidance", value=DEFAULT_GUIDANCE, visible=first["guidance"])
                        sampler = checks.build("sampler", value=first["default_sampler"], visible=len(first["samplers"]) > 1)
                    note = gr.Markdown(_note(page, None), elem_id="edit-note")
                    run = gr.Button("Edit", variant="primary", elem_id="edit-button", interactive=first["can_edit"])
                with gr.Column():
                    gallery = gr.Gallery(label="Edits", columns=2, format="png", object_fit="contain")
                    status = gr.Markdown()
                    files = gr.File(label="Downloads", file_count="multiple")
        return cls(page, editor, description, strength, num_images, seed, steps, guidance, sampler, note, run, gallery,
                   status, files)

    def wire(self, model: gr.components.Component) -> None:
        self.run.click(self.edit, [self.editor, self.description, self.strength, self.num_images, self.steps, self.guidance,
                                   self.sampler, self.seed, model],
                       [self.gallery, self.status, self.files], api_name="edit", **self.page.model_job(self.status))

    def model_outputs(self) -> list[Any]:
        """The components a model change updates, in model_updates' order."""
        return [self.steps, self.guidance, self.sampler, self.run, self.note]

    def model_updates(self, model: str | None) -> list[Any]:
        c = self.page.controls(model)
        samplers = c["samplers"]
        return [gr.update(visible=c["steps"], value=c["default_steps"]), gr.update(visible=c["guidance"]),
                gr.update(choices=samplers, value=c["default_sampler"], visible=len(samplers) > 1),
                gr.update(interactive=c["can_edit"]), _note(self.page, model)]

    @messages
    def edit(self, editor: Any, description: str, strength: float, num_images: float, steps: float, guidance: float,
             sampler: str, seed: float, model: str | None = None, request: gr.Request = None,
             progress: gr.Progress = gr.Progress()) -> Iterator[tuple[Any, ...]]:
        photo, mask = editor_parts(editor)
        job = EditRequest(photo, description, mask, strength, num_images, steps, guidance, sampler, 0 if seed is None else seed,
                          model or None)
        for update in self.page.studio.edit(job, session_of(request)):
            report(progress, update)
            yield update.images, update.status, update.files if update.done else gr.skip()


def _note(page: Page, model: str | None) -> str:
    """The line under the Edit button when the chosen model cannot edit ("" when it can)."""
    refusal = page.studio.edit_refusal(model or None)
    return f"*{refusal} above to edit.*" if refusal else ""


__all__ = ["EditTab"]
