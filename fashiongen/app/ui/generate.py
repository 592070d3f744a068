"""The Generate tab: a description, attributes and sampling settings in; designs with previews, downloads, Stop, live
regeneration for a one-forward model, and buttons that send a picked design to the Edit or Nearest products tab."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import gradio as gr

from ...settings import DEFAULT_GUIDANCE
from ..checks import ANY, ATTRIBUTES, GenerateRequest
from ..studio import Studio
from .live import LiveRegeneration
from .page import Page, messages, report, session_of


@dataclass
class GenerateTab:
    """The tab's components (those other tabs and events need) and its handlers."""

    page: Page
    model: gr.components.Component  # the model choice above the tabs
    description: gr.Textbox
    negative: gr.Textbox
    dropdowns: list[gr.Dropdown]  # one per attribute, in ATTRIBUTES' order
    num_images: gr.Slider
    steps: gr.Slider
    guidance: gr.Slider
    sampler: gr.Dropdown
    truncation: gr.Slider
    seed: gr.Number
    random_seed: gr.Checkbox
    live: gr.Checkbox
    run: gr.Button
    stop: gr.Button
    gallery: gr.Gallery
    status: gr.Markdown
    to_edit: gr.Button
    to_nearest: gr.Button
    files: gr.File

    @classmethod
    def build(cls, page: Page, model: gr.components.Component, examples: list[dict[str, Any]] | None) -> GenerateTab:
        checks, first = page.checks, page.first
        choices = page.studio.attribute_choices
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
                    truncation = checks.build("truncation", value=page.start_truncation, visible=first["truncation"],
                                              elem_id="truncation")
                    with gr.Row():
                        seed = checks.build("seed", value=0)
                        random_seed = checks.build("random_seed", value=True)
                        live = checks.build("live", value=first["live"], visible=first["live"], elem_id="live")
                    with gr.Row():
                        run = gr.Button("Generate", variant="primary", elem_id="generate-button")
                        stop = gr.Button("Stop", variant="stop", elem_id="stop-button")
                    example_rows = _examples(page.studio, examples)
                    if example_rows:
                        gr.Examples(example_rows, inputs=[description, *dropdowns], label="Descriptions from the dataset")
                with gr.Column(scale=3):
                    gallery = gr.Gallery(label="Designs", columns=4, format="png", elem_id="gallery", height=420,
                                         object_fit="contain")
                    status = gr.Markdown(elem_id="status")
                    with gr.Row():
                        to_edit = gr.Button("Edit the selected design")
                        to_nearest = gr.Button("Nearest real products", interactive=page.studio.products is not None)
                    files = gr.File(label="Downloads: images and settings.json", file_count="multiple", elem_id="downloads")
        return cls(page, model, description, negative, dropdowns, num_images, steps, guidance, sampler, truncation, seed,
                   random_seed, live, run, stop, gallery, status, to_edit, to_nearest, files)

    @property
    def inputs(self) -> list[Any]:
        """/generate's inputs in the documented API's order."""
        return [self.description, self.negative, *self.dropdowns, self.num_images, self.steps, self.guidance, self.sampler,
                self.seed, self.random_seed, self.model, self.truncation]

    @property
    def outputs(self) -> list[Any]:
        return [self.gallery, self.status, self.files, self.seed]

    def wire(self, live_token: gr.State) -> None:
        """Generate (the button, Enter in the description, live changes) and Stop."""
        job = self.page.model_job(self.status)
        event = self.run.click(self.generate, self.inputs, self.outputs, api_name="generate", **job)
        submitted = self.description.submit(self.generate, self.inputs, self.outputs, api_visibility="private", **job)
        live = LiveRegeneration(self.generate, lambda model: self.page.controls(model)["live"])
        triggers = [self.description.input, self.negative.input, *(d.input for d in self.dropdowns), self.num_images.release,
                    self.seed.input, self.truncation.release, self.live.input]
        live_events = live.wire(triggers, self.live, self.model, live_token, self.inputs, self.outputs, self.page.concurrency)
        self.stop.click(self.cancel, None, self.status, cancels=[event, submitted, *live_events], api_name="cancel", queue=False)

    def wire_picks(self, chosen: gr.State, editor: gr.ImageEditor, query: gr.Image, tabs: gr.Tabs) -> None:
        """A design picked in the gallery goes to the Edit or the Nearest products tab."""
        self.gallery.select(self.on_select, None, chosen, api_visibility="private", queue=False)
        self.to_edit.click(self.send_to_edit, [self.gallery, chosen], [editor, tabs], api_visibility="private", queue=False)
        self.to_nearest.click(self.send_to_nearest, [self.gallery, chosen], [query, tabs], api_visibility="private",
                              queue=False)

    def model_outputs(self) -> list[Any]:
        """The components a model change updates, in model_updates' order."""
        return [self.steps, self.guidance, self.sampler, self.negative, self.truncation, self.live, *self.dropdowns]

    def model_updates(self, model: str | None) -> list[Any]:
        c = self.page.controls(model)
        attribute_choices = self.page.studio.attribute_choices_for(model or None)
        samplers = c["samplers"]
        return [gr.update(visible=c["steps"], value=c["default_steps"]), gr.update(visible=c["guidance"]),
                gr.update(choices=samplers, value=c["default_sampler"], visible=len(samplers) > 1),
                gr.update(visible=c["negative"]), gr.update(visible=c["truncation"], value=c["default_truncation"]),
                gr.update(visible=c["live"], value=c["live"]),
                *[gr.update(choices=attribute_choices[name], value=ANY, visible=len(attribute_choices[name]) > 1)
                  for name in ATTRIBUTES]]

    # ------------------------------------------------------------------ handlers

    @messages
    def generate(self, description: str, negative: str, category: str, gender: str, colour: str, season: str,
                 num_images: float, steps: float, guidance: float, sampler: str, seed: float, random_seed: bool,
                 model: str | None = None, truncation: float | None = None, request: gr.Request = None,
                 progress: gr.Progress = gr.Progress()) -> Iterator[tuple[Any, ...]]:
        attributes = dict(zip(ATTRIBUTES, (category, gender, colour, season)))
        controls = self.page.controls(model)
        job = GenerateRequest(description, (negative or "") if controls["negative"] else "", attributes, num_images, steps,
                              guidance, sampler if sampler in controls["samplers"] else None, 0 if seed is None else seed,
                              bool(random_seed), model or None, self.page.truncation(model, truncation))
        for update in self.page.studio.generate(job, session_of(request)):
            report(progress, update)
            if update.done:
                yield update.images, update.status, update.files, update.extra.get("seed", gr.skip())
            else:
                yield update.images, update.status, gr.skip(), gr.skip()

    def cancel(self, request: gr.Request = None) -> str:
        stopped = self.page.studio.cancel(session_of(request))
        return "Stopping…" if stopped else "Nothing is running."

    def on_select(self, event: gr.SelectData) -> int:
        return int(event.index)

    def send_to_edit(self, images: list[Any] | None, index: int | None) -> tuple[Any, Any]:
        path = _selected_image(images, index)
        if path is None:
            raise gr.Error("Generate an image first, then pick it in the gallery.", title="Nothing to edit")
        return {"background": path, "layers": [], "composite": path}, gr.Tabs(selected="edit")

    def send_to_nearest(self, images: list[Any] | None, index: int | None) -> tuple[Any, Any]:
        path = _selected_image(images, index)
        if path is None:
            raise gr.Error("Generate an image first, then pick it in the gallery.", title="Nothing to search for")
        return path, gr.Tabs(selected="nearest")


def _selected_image(images: list[Any] | None, index: int | None) -> str | None:
    if not images:
        return None
    item = images[index if index is not None and 0 <= index < len(images) else 0]
    return item[0] if isinstance(item, (tuple, list)) else item


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


__all__ = ["GenerateTab"]
