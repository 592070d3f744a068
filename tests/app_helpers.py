"""A running app for the app tests: a tiny exported model, a product index over a small garment set, and the
demo launched on 127.0.0.1 (a real server: gradio_client and the browser talk HTTP to it)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402
import pytest  # noqa: E402

from fashiongen.app import ProductIndex, build_demo  # noqa: E402
from fashiongen.config import TextConfig  # noqa: E402
from fashiongen.pipeline import FashionGenPipeline  # noqa: E402
from fashiongen.text import CaptionEncoder  # noqa: E402
from pipeline_helpers import export_tiny, export_tiny_gan  # noqa: E402

GENERATE_DEFAULTS = dict(negative="", category="any", gender="any", colour="any", season="any", num_images=2, steps=3,
                         guidance=3.0, sampler="dpm++", seed=0, random_seed=False)


@dataclass
class RunningApp:
    demo: gr.Blocks
    url: str
    pipeline: FashionGenPipeline
    products: ProductIndex | None
    output_dir: Path


def start_app(root: Path, garments: Path | None, max_queue: int = 32, gan: bool = False) -> RunningApp:
    """The app over a tiny diffusion model; with `gan`, also a tiny GAN, the page offering both ("diffusion", "gan")."""
    encoder = CaptionEncoder(TextConfig(cache_dir=""))
    model = export_tiny(root / "model", encoder, attributes=True)
    pipeline = FashionGenPipeline.from_pretrained(model)
    models: FashionGenPipeline | dict[str, FashionGenPipeline] = pipeline
    if gan:
        models = {"diffusion": pipeline, "gan": FashionGenPipeline.from_pretrained(
            export_tiny_gan(root / "gan", encoder, attributes=True))}
    products = None
    if garments is not None:
        products = ProductIndex.build(garments, cache_dir=root / "cache", show_progress=False)
    demo = build_demo(models, products, examples=products.examples(4) if products else None, max_queue=max_queue,
                      output_dir=str(root / "outputs"))
    _, url, _ = demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, ssr_mode=False, quiet=True)
    return RunningApp(demo, url, pipeline, products, root / "outputs")


def generate_args(description: str, **changes: object) -> list[object]:
    """Positional inputs of /generate in order, from the defaults above with `changes`."""
    values = {**GENERATE_DEFAULTS, **changes}
    return [description, *(values[name] for name in GENERATE_DEFAULTS)]


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, garments16: Path) -> RunningApp:
    """The app over the garment set, one per test module (import this fixture into the module)."""
    running = start_app(tmp_path_factory.mktemp("app"), garments16)
    yield running
    running.demo.close()
