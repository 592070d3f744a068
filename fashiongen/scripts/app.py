"""The FashionGen app: describe a garment and get designs, interpolate, edit a photo, find the nearest real products.

    python app.py                                          # the models shipped with the package: diffusion and GAN
    python app.py --model runs/001-small64/export --products ../shared/data/fashion-products
    python app.py --model diffusion --model runs/002-gan64/export   # several: the page offers the choice
    python app.py --model MODEL --host 0.0.0.0 --port 7860 --concurrency 1 --max-queue 32 --max-upload-mb 20

Every model is loaded once, before the server starts; the first is the page's default (the shipped models: the one
with the best scores on the validation captions). --products (default: the dataset the model was trained on, when it
is on this machine) enables the Nearest products tab; its index is built in the background while the app serves
(the tab says how far it is), and its critic embeddings are cached under --cache-dir, so only the first start reads
every photo.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from an offline studio machine

from fashiongen.app import Limits, ProductIndex, build_demo, model_names  # noqa: E402
from fashiongen.app.choice import best_first  # noqa: E402
from fashiongen.app.compute import ComputeThread  # noqa: E402
from fashiongen.app.indexing import BATCH_SIZE, BackgroundIndex  # noqa: E402
from fashiongen.data.sources import detect_format  # noqa: E402
from fashiongen.evaluation.critic import load_critic  # noqa: E402
from fashiongen.errors import ArgumentParser, command, raising_user_errors  # noqa: E402
from fashiongen.models.files import BUNDLED_CRITIC, BUNDLED_GAN, BUNDLED_STUDENT  # noqa: E402
from fashiongen.models.runtime import RUNTIMES  # noqa: E402
from fashiongen.pipeline import FashionGenPipeline, default_model_path, model_path  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", default=[],
                        help="exported model, saved pipeline, checkpoint or run directory, or a shipped model by name "
                             "(student, diffusion, gan); repeat for a choice on the page, the first the default (default: "
                             "the shipped models, the best-scoring on the validation captions first: app/choice.py)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for your network)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link (needs internet)")
    parser.add_argument("--products", help="dataset of real products for the Nearest products tab (default: the model's "
                                           "training data, if present)")
    parser.add_argument("--no-products", action="store_true", help="start without the Nearest products tab")
    parser.add_argument("--critic", default=str(BUNDLED_CRITIC), help="critic network for product search (default: bundled)")
    parser.add_argument("--cache-dir", default="~/.cache/fashiongen", help="where product embeddings are cached")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--runtime", default="auto", choices=list(RUNTIMES),
                        help="how diffusion models run their network (default auto: the fastest this machine has; "
                             "eager, channels_last, onnxruntime; docs/fast-path.md)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                        help="the networks' compute dtype (default auto: bfloat16 where this CPU has fast kernels for it, "
                             "else float32; a dtype without them falls back to float32 with a warning)")
    parser.add_argument("--concurrency", type=int, default=1, help="model jobs run at once (default 1; more only on a GPU)")
    parser.add_argument("--max-queue", type=int, default=32, help="requests that may wait before new ones are refused")
    parser.add_argument("--max-upload-mb", type=int, default=Limits.max_upload_mb,
                        help=f"largest uploaded file in MB (default {Limits.max_upload_mb})")
    parser.add_argument("--max-upload-megapixels", type=float, default=Limits.max_upload_pixels / 1e6,
                        help=f"largest uploaded image in megapixels, checked before decoding (default {Limits.max_upload_pixels / 1e6:g})")
    return parser.parse_args(argv)


def products_source(args: argparse.Namespace, pipeline: FashionGenPipeline) -> Path | None:
    if args.no_products:
        return None
    if args.products:
        return Path(args.products)
    trained_on = pipeline.stages[0].info.data.source
    if trained_on and Path(trained_on).exists():
        return Path(trained_on)
    logging.warning("the model's training data (%s) is not here; start with --products DATASET for the Nearest products tab",
                    trained_on)
    return None


def load(args: argparse.Namespace) -> tuple[dict[str, FashionGenPipeline], BackgroundIndex | None, ComputeThread]:
    """Every model (on the compute thread that will sample with them: fashiongen/app/compute.py, one thread for all
    torch work), then the product index's build, started in the background (app/indexing.py)."""
    shipped = [default_model_path(), *(path for path in (BUNDLED_STUDENT, BUNDLED_GAN) if path.is_dir())]
    paths = [model_path(value) for value in args.model] or shipped
    compute = ComputeThread()
    loaded = compute.run(lambda: [FashionGenPipeline.from_pretrained(path, device=args.device, runtime=args.runtime,
                                                                     dtype=args.dtype) for path in paths])
    pipelines = dict(zip(model_names(loaded, [path.name for path in paths]), loaded))
    if not args.model:  # the shipped models: the page opens on the best images, not the fastest (app/choice.py)
        pipelines = best_first(pipelines)
    return pipelines, product_index(args, next(iter(pipelines.values())), compute), compute


def product_index(args: argparse.Namespace, first: FashionGenPipeline, compute: ComputeThread) -> BackgroundIndex | None:
    """The Nearest products tab's index, built while the app already serves. A source or critic that cannot be used
    is one error line now (its format and the critic's files are checked first), not a failed build later."""
    source = products_source(args, first)
    if source is None:
        return None
    detect_format(source.expanduser())
    load_critic(args.critic, device=args.device)
    data = first.stages[0].info.data
    return BackgroundIndex(lambda progress: ProductIndex.build(
        source, critic=args.critic, cache_dir=args.cache_dir, device=args.device, caption_mode=data.caption_mode,
        caption_template=data.caption_template, batch_size=BATCH_SIZE, show_progress=False, progress=progress,
        run=compute.run), start=False)


@command()
def main(argv: list[str] | None = None) -> int:
    """A model, dataset or critic that cannot be used (missing, damaged, unreadable): one `error:` line, exit 2."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    with raising_user_errors(OSError, ValueError):  # the files named on the command line; later ones are bugs
        pipelines, products, compute = load(args)
    limits = Limits(max_upload_mb=args.max_upload_mb, max_upload_pixels=int(args.max_upload_megapixels * 1e6))
    demo = build_demo(pipelines, products, limits=limits, concurrency=args.concurrency, max_queue=args.max_queue, compute=compute)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, ssr_mode=False, footer_links=["api"],
                prevent_thread_lock=True)
    if products is not None:
        products.start()  # once the page answers: reading 9,000 photos would slow the server's start
    demo.block_thread()
    return 0

if __name__ == "__main__":
    sys.exit(main())
