"""The Nearest products tab: the real training products a design is closest to (by the critic network's image
embedding), so a designer can see whether it is new."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from ..indexing import BackgroundIndex
from .page import Page, messages, read_uploads_checked

STATUS_INTERVAL_S = 2.0  # how often the tab's line on a product index being built is refreshed


@dataclass
class NearestTab:
    """The tab's components (those events and the Generate tab need) and its handler."""

    page: Page
    query: gr.Image
    count: gr.Slider
    run: gr.Button
    verdict: gr.Markdown
    gallery: gr.Gallery

    @classmethod
    def build(cls, page: Page) -> NearestTab:
        products = page.studio.products
        with gr.Tab("Nearest products", id="nearest"):
            if products is None:
                gr.Markdown("No product index is loaded. Start the app with `--products DATASET` "
                            "(e.g. `../shared/data/fashion-products`) to search the real training products.")
            elif isinstance(products, BackgroundIndex):  # being built while the app serves: say how far, until ready
                status = gr.Markdown(products.status(), elem_id="products-status")
                timer = gr.Timer(STATUS_INTERVAL_S, active=not products.wait(0))
                timer.tick(lambda: (products.status(), gr.Timer(active=not products.wait(0))),  # stops once built
                           None, [status, timer], api_visibility="private", queue=False)
            else:
                gr.Markdown(f"Searches {len(products):,} real training products by the critic network's image "
                            "embedding, so you can see whether a design is new.")
            with gr.Row():
                query = page.checks.build("design", type="numpy", sources=("upload", "clipboard"), elem_id="query")
                read_uploads_checked(query, page.studio)
                with gr.Column():
                    count = page.checks.build("products", value=6)
                    run = gr.Button("Find nearest products", variant="primary", interactive=products is not None)
            verdict = gr.Markdown()
            gallery = gr.Gallery(label="Nearest real products", columns=6, format="jpeg", object_fit="contain")
        return cls(page, query, count, run, verdict, gallery)

    def wire(self) -> None:
        self.run.click(self.nearest, [self.query, self.count], [self.gallery, self.verdict], api_name="nearest",
                       concurrency_limit=4)

    @messages
    def nearest(self, image: np.ndarray | None, count: float) -> Iterator[tuple[Any, ...]]:
        found, verdict = self.page.studio.nearest(image, count)
        yield [(Image.fromarray(product.image), product.label) for product in found], verdict


__all__ = ["NearestTab"]
