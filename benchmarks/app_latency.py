"""App latency through its HTTP API (gradio_client), as a designer's browser or a script sees it.

    python benchmarks/app_latency.py                       # unet-small 64 px (random weights: speed only), 4 images x 20 steps
    python benchmarks/app_latency.py --model runs/001-small64/export --products ../shared/data/fashion-products \
        --screenshot docs/app/generate.png                 # also a screenshot of the page after a generation
    python benchmarks/app_latency.py --model gan --live --out benchmarks/results/app_latency_gan.json
                                                           # the shipped GAN, and live regeneration in a browser
    python benchmarks/app_latency.py --model student --threads 2 --out benchmarks/results/app_latency_student.json
                                                           # the shipped 4-step student at 256 px, as the app serves it

Measures, for one request of --images images at --steps DPM++ steps with guidance:
- time to the first preview and to the first finished image, and the whole request;
- requests per minute with 1 and with 4 clients sending requests back to back;
- the baseline in the same process: the pipeline called directly on the same request as one batch
  (what a plain "generate, then show" page would do), whose first image is ready only with the last.
With --live (a one-forward model): in headless Chromium, the seconds from the last keystroke of a typed
description to the new images in the gallery (the page's debounce included), and how many generations a burst
of typing started. Also the request's FLOPs (counted over the eager pipeline, every stage), this machine's measured
fp32 peak and the fraction of it the app and the direct batch reach (on --runtime, the app's own: auto by default).
Writes benchmarks/results/app_latency.json.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from gradio_client import Client  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from benchmarks.common import machine  # noqa: E402
from benchmarks.sampling import load_pipeline, peak_gflops  # noqa: E402
from fashiongen.app import ProductIndex, build_demo  # noqa: E402
from fashiongen.app.compute import ComputeThread  # noqa: E402
from fashiongen.app.ui import LIVE_DEBOUNCE_S  # noqa: E402
from fashiongen.models import MODELS  # noqa: E402
from fashiongen.models.runtime import cpu_support  # noqa: E402
from fashiongen.pipeline import FashionGenPipeline, SamplingSettings, model_path  # noqa: E402

PROMPTS = ["red floral summer dress", "black leather ankle boots", "men's navy check shirt", "white sneakers"]
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-quic", "--no-first-run", "--disable-sync"]


SAMPLER = {"name": "dpm++"}  # the served model's default sampler (main sets it)


def request(prompt: str, images: int, steps: int, seed: int) -> list[Any]:
    """/generate's inputs, with the served model's default sampler."""
    return [prompt, "", "any", "any", "any", "any", images, steps, 3.0, SAMPLER["name"], seed, False]


def timed_request(client: Client, prompt: str, images: int, steps: int, seed: int) -> dict[str, float]:
    """Seconds to the first streamed output (a preview), to the first finished image, and to the end."""
    started = time.perf_counter()
    job = client.submit(*request(prompt, images, steps, seed), api_name="/generate")
    first_preview = first_image = None
    while not job.done():
        outputs = job.outputs()
        if outputs and first_preview is None:
            first_preview = time.perf_counter() - started
        if outputs and first_image is None and any("step" not in (item.get("caption") or "") for item in outputs[-1][0]):
            first_image = time.perf_counter() - started
        time.sleep(0.02)
    result = job.result()
    total = time.perf_counter() - started
    assert len(result[0]) == images, f"expected {images} images, got {len(result[0])}"
    # the server's own clock (the job's settings.json): the studio's work without Gradio's transfer and this client
    record = json.loads(Path(result[2][-1]).read_text(encoding="utf-8"))
    return {"first_preview_s": first_preview or total, "first_image_s": first_image or total, "total_s": total,
            "server_first_image_s": record["seconds_to_first_image"], "server_images_s": record["seconds"]}


def throughput(url: str, clients: int, requests_each: int, images: int, steps: int) -> dict[str, Any]:
    """`clients` threads, each its own gradio_client, sending `requests_each` requests back to back."""
    done: list[float] = []
    lock = threading.Lock()

    def one(number: int) -> None:
        client = Client(url, verbose=False)
        for k in range(requests_each):
            seconds = timed_request(client, PROMPTS[(number + k) % len(PROMPTS)], images, steps, 1000 * number + k)["total_s"]
            with lock:
                done.append(seconds)

    started = time.perf_counter()
    threads = [threading.Thread(target=one, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    return {"clients": clients, "requests": len(done), "wall_s": round(wall, 2),
            "requests_per_min": round(60 * len(done) / wall, 2), "median_request_s": round(statistics.median(done), 2)}


def screenshot(url: str, path: Path, prompt: str, images: int) -> None:
    """Drive the page in headless Debian chromium: type, generate, wait for the gallery, save a PNG."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 820})
        page.goto(url, wait_until="domcontentloaded")
        page.locator("#description textarea").fill(prompt)
        page.locator("#generate-button").click()
        page.locator("#status").filter(has_text="images in").wait_for(timeout=300_000)
        page.wait_for_timeout(500)
        path.parent.mkdir(parents=True, exist_ok=True)
        from PIL import Image

        shot = Image.open(io.BytesIO(page.screenshot(full_page=False))).convert("RGB")
        shot.save(path, optimize=True)
        browser.close()
    print(f"screenshot: {path}")


def live_latency(url: str, output_dir: Path, prompts: list[str]) -> dict[str, Any]:
    """Type each description (40 ms a key) with Live on; seconds from the last key to new images in the gallery, and
    generations started per burst (output folders written)."""
    from playwright.sync_api import sync_playwright

    seconds, generations = [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 820})
        page.goto(url, wait_until="domcontentloaded")
        box = page.locator("#description textarea")
        box.wait_for(timeout=60_000)
        if not page.locator("#live input").is_checked():
            raise SystemExit("--live: the page offers no live regeneration for this model (one forward an image only)")
        for prompt in prompts:
            before = page.evaluate("() => Array.from(document.querySelectorAll('#gallery img')).map(i => i.src).join()")
            made = len(list(output_dir.glob("*-generate-*")))
            box.fill("")
            box.click()
            page.keyboard.type(prompt, delay=40)
            typed = time.perf_counter()
            page.wait_for_function("(before) => { const s = Array.from(document.querySelectorAll('#gallery img'))"
                                   ".map(i => i.src).join(); return s && s !== before && "
                                   "document.querySelectorAll('#gallery img').length > 0; }", arg=before, timeout=60_000)
            seconds.append(time.perf_counter() - typed)
            page.wait_for_timeout(1500)  # a late generation would have started by now
            generations.append(len(list(output_dir.glob("*-generate-*"))) - made)
        browser.close()
    return {"keystroke_to_images_s": round(statistics.median(seconds), 3), "runs_s": [round(x, 3) for x in seconds],
            "generations_per_burst": generations, "keys_per_burst": [len(p) for p in prompts], "debounce_s": LIVE_DEBOUNCE_S}


def serve(model: str, products: str | None, port: int, threads: int, output_dir: str, ready: Any, runtime: str = "eager",
          dtype: str = "float32") -> None:
    """The app in its own process, as in production: the client's work does not share its interpreter."""
    if threads:
        torch.set_num_threads(threads)
    compute = ComputeThread()  # loaded on the app's compute thread, as app.py does (fashiongen/app/compute.py)
    pipe = compute.run(FashionGenPipeline.from_pretrained, model, runtime=runtime, dtype=dtype)
    index = None
    if products:
        index = compute.run(ProductIndex.build, products, cache_dir="~/.cache/fashiongen",
                            caption_mode=pipe.stages[0].info.data.caption_mode, show_progress=False)
    demo = build_demo(pipe, index, examples=index.examples(8) if index else None, output_dir=output_dir, compute=compute)
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, ssr_mode=False, quiet=True)
    ready.put(True)
    threading.Event().wait()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="unet-small", help="registry name (random weights), an exported model, or a "
                                                              "shipped one by name (student, diffusion, gan): a folder "
                                                              "is served whole, its upsampling stage included")
    parser.add_argument("--products", help="dataset for the Nearest products tab (only for the screenshot)")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--steps", type=int, default=None, help="default: the model's own (20; 4 for a student)")
    parser.add_argument("--runtime", default="auto", help="the app's runtime (app.py's default: auto; docs/fast-path.md)")
    parser.add_argument("--dtype", default="auto", help="the app's compute dtype (app.py's default: auto, bf16 where fast)")
    parser.add_argument("--latency-requests", type=int, default=3, help="requests timed one at a time (median reported)")
    parser.add_argument("--clients", default="1,4", help="client counts for requests/min")
    parser.add_argument("--requests-each", type=int, default=2, help="requests per client in the throughput runs")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--screenshot", type=Path, help="save a screenshot of the page after one generation")
    parser.add_argument("--live", action="store_true", help="also time live regeneration as a description is typed")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "app_latency.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    scratch = Path(tempfile.mkdtemp(prefix="app-latency-"))
    if args.model in ("diffusion", "gan", "student"):
        args.model = str(model_path(args.model))
    if args.model in MODELS:
        pipe, source = load_pipeline(args.model, None, "cpu", "float32", scratch, seed=0)
    else:  # a folder as the app serves it, every stage
        pipe, source = FashionGenPipeline.from_pretrained(args.model), {"model": args.model, "random_weights": False}
        pipe.show_progress = False
    sampler = pipe.default_sampler
    SAMPLER["name"] = sampler
    args.steps = args.steps or pipe.stages[0].default_steps
    served = str(scratch / "model") if source["random_weights"] else args.model
    settings = SamplingSettings(args.steps, 3.0, sampler)
    with FlopCounterMode(display=False) as counter:  # the eager pipeline: every op of the request, all stages
        pipe.generate_images([PROMPTS[0]] * args.images, list(range(args.images)), settings)
    flops = counter.get_total_flops()
    peaks = {"float32": peak_gflops(torch.float32)}
    if cpu_support().bf16:
        peaks["bfloat16"] = peak_gflops(torch.bfloat16)
    fast = (FashionGenPipeline.from_pretrained(served, runtime=args.runtime, dtype=args.dtype)
            if (args.runtime, args.dtype) != ("eager", "float32") else pipe)
    fast.show_progress = False
    computed = getattr(fast.stages[0], "runtime", {}).get("dtype", "float32")  # a GAN has no runtime choice
    dtype_peak = peaks.get(computed, peaks["float32"])["matmul"]
    port = free_port()
    context = multiprocessing.get_context("spawn")
    ready = context.Queue()
    server = context.Process(target=serve, args=(served, args.products, port, args.threads, str(scratch / "outputs"), ready,
                                                args.runtime, args.dtype), daemon=True)
    server.start()
    ready.get(timeout=600)
    url = f"http://127.0.0.1:{port}/"
    try:
        client = Client(url, verbose=False)
        timed_request(client, PROMPTS[0], 1, 2, 0)  # warm-up: first-call costs (threads, caches) are not latency

        baseline = []  # the server idles meanwhile
        fast.generate_images([PROMPTS[0]], [0], settings)  # its warm-up
        for k in range(args.latency_requests):
            started = time.perf_counter()
            fast.generate_images([PROMPTS[k % 4]] * args.images, list(range(k, k + args.images)), settings)
            baseline.append(time.perf_counter() - started)
        runs = [timed_request(client, PROMPTS[k % 4], args.images, args.steps, k) for k in range(args.latency_requests)]
        latency = {key: round(statistics.median(run[key] for run in runs), 2) for key in runs[0]}
        batch = round(statistics.median(baseline), 2)
        result: dict[str, Any] = {
            "machine": machine(torch.device("cpu")), "source": source,
            "request": {"images": args.images, "steps": pipe.stages[0].steps_per_image(settings), "guidance": 3.0,
                        "sampler": sampler, "family": pipe.stages[0].family, "size": pipe.resolution,
                        "stages": [stage.family for stage in pipe.stages], "runtime": fast.runtime},
            "flops": {"gflop_per_request": round(flops / 1e9, 1), "gflop_per_image": round(flops / args.images / 1e9, 2),
                      "counted": "torch.utils.flop_counter over the eager pipeline's request (all stages)"},
            "peaks_gflops": peaks,
            "fraction_of_fp32_peak": {"app_total": round(flops / latency["total_s"] / 1e9 / peaks["float32"]["matmul"], 3),
                                      "direct_batch": round(flops / statistics.median(baseline) / 1e9 / peaks["float32"]["matmul"], 3)},
            "fraction_of_dtype_peak": {  # of the peak of the dtype the app computes in (bf16's where it runs bf16)
                "app_total": round(flops / latency["total_s"] / 1e9 / dtype_peak, 3),
                "direct_batch": round(flops / batch / 1e9 / dtype_peak, 3)},
            "app": latency, "app_runs": runs,
            "baseline_direct_batch_s": batch,
            "ratios": {"first_image_app_vs_batch": round(batch / latency["first_image_s"], 2),
                       "total_app_vs_batch": round(latency["total_s"] / batch, 3)},
            "throughput": [throughput(url, int(c), args.requests_each, args.images, args.steps) for c in args.clients.split(",")],
        }
        if args.live:
            result["live"] = live_latency(url, scratch / "outputs", ["red floral summer dress", "black leather ankle boots",
                                                                     "men's navy check shirt"])
        if args.screenshot:
            screenshot(url, args.screenshot, PROMPTS[0], args.images)
    finally:
        server.terminate()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: result[k] for k in ("request", "flops", "fraction_of_fp32_peak", "fraction_of_dtype_peak", "app",
                                             "baseline_direct_batch_s", "ratios", "throughput", "live")
                      if k in result}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
