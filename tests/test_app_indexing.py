"""The product index built in the background (app/indexing.py): the app serves at once on a new machine; until the
index is ready the Nearest products tab and its endpoint say how far the build is; then it searches exactly as an
index built before the start would; a build that fails leaves the other tabs working and says why."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from fashiongen.app import ProductIndex, Studio, build_demo
from fashiongen.app.compute import ComputeThread
from fashiongen.app.indexing import BackgroundIndex
from fashiongen.config import TextConfig
from fashiongen.pipeline import FashionGenPipeline, PipelineInputError
from fashiongen.text import CaptionEncoder
from pipeline_helpers import export_tiny


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> FashionGenPipeline:
    return FashionGenPipeline.from_pretrained(export_tiny(tmp_path_factory.mktemp("model"),
                                                          CaptionEncoder(TextConfig(cache_dir=""))))


def building(source: Path, compute: ComputeThread, cache: Path | None = None) -> BackgroundIndex:
    return BackgroundIndex(lambda progress: ProductIndex.build(source, cache_dir=cache, batch_size=4, show_progress=False,
                                                               progress=progress, run=compute.run))


def test_until_ready_the_studio_says_how_far_the_index_is_then_searches_like_one_built_first(
        pipeline: FashionGenPipeline, garments16: Path, tmp_path: Path) -> None:
    compute = ComputeThread()
    gate, holding = threading.Event(), threading.Event()

    def hold() -> None:  # the compute thread busy with a designer's request: the index's batches wait their turn
        holding.set()
        gate.wait(60)

    busy = compute.submit(hold)
    holding.wait(10)
    products = building(garments16, compute)
    studio = Studio(pipeline, products, compute=compute)
    try:
        photo = np.asarray(Image.open(garments16 / "images" / "3.png").convert("RGB"))
        with pytest.raises(PipelineInputError, match=r"^Indexing the real products"):
            studio.nearest(photo, 3)
        assert not products.ready and not products.wait(0.2)
        gate.set()
        busy.result(10)
        assert products.wait(60) and products.ready
        direct = ProductIndex.build(garments16, show_progress=False)
        assert products.status().startswith(f"Searches {len(direct):,} real training products")
        found, verdict = studio.nearest(photo, 3)
        assert [p.id for p in found] == [p.id for p in direct.search(photo, 3)] and found[0].caption.startswith("Black boots 3")
        assert verdict.startswith("Closest product: similarity 1.000")
    finally:
        gate.set()
        studio.close()
        compute.close()


def test_progress_counts_every_photo_and_a_failed_build_says_why(pipeline: FashionGenPipeline, garments16: Path,
                                                                 tmp_path: Path) -> None:
    compute = ComputeThread()
    seen: list[tuple[int, int]] = []
    try:
        index = ProductIndex.build(garments16, batch_size=4, show_progress=False, progress=lambda *n: seen.append(n),
                                   run=compute.run, baseline_split=None)
        assert seen[-1] == (len(index), len(index)) and [done for done, _ in seen] == sorted(done for done, _ in seen)
        empty = tmp_path / "empty"
        (empty / "images").mkdir(parents=True)
        (empty / "captions.jsonl").write_text("")
        failed = building(empty, compute)
        assert failed.wait(60) and not failed.ready
        assert failed.status().startswith("The product index could not be built (") and "other tabs work" in failed.status()
        with pytest.raises(PipelineInputError, match="could not be built"):
            failed.get()
    finally:
        compute.close()


def test_the_app_serves_while_the_index_is_built_and_its_tab_tells_the_progress(
        pipeline: FashionGenPipeline, garments16: Path, tmp_path: Path) -> None:
    compute = ComputeThread()
    gate = threading.Event()
    busy = compute.submit(gate.wait, 60)
    products = building(garments16, compute, tmp_path / "cache")
    demo = build_demo(pipeline, products, output_dir=str(tmp_path / "out"), compute=compute)
    try:
        _, url, _ = demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, ssr_mode=False, quiet=True)
        config = Client(url, verbose=False).config
        texts = [c.get("props", {}).get("value") for c in config["components"] if c.get("props", {}).get("elem_id") == "products-status"]
        assert texts and texts[0].startswith("Indexing the real products")
        with pytest.raises(AppError, match="Indexing the real products"):
            Client(url, verbose=False).predict(handle_file(str(garments16 / "images" / "3.png")), 4, api_name="/nearest")
        gate.set()
        busy.result(10)
        assert products.wait(60)
        gallery, verdict = Client(url, verbose=False).predict(handle_file(str(garments16 / "images" / "3.png")), 4,
                                                              api_name="/nearest")
        assert gallery[0]["caption"].startswith("Black boots 3") and "similarity 1.000" in verdict
    finally:
        gate.set()
        demo.close()
        demo.studio.close()
        compute.close()
