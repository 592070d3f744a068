"""Caption encoder throughput on the bundled captions: cold (no cache), cache fill, and warm cache hits.

    python benchmarks/text_encoder.py [captions.jsonl] --num-captions 2000 --batch-size 64 --threads 2

Captions are fed as training does, one encode call per batch; the last stdout line is a JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere, without installing the package

from fashiongen.config import TextConfig  # noqa: E402
from fashiongen.text import CaptionEncoder  # noqa: E402


def read_captions(path: Path, limit: int) -> list[str]:
    captions = []
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                captions.append(json.loads(line)["caption"])
            if len(captions) == limit:
                break
    return captions


def captions_per_second(encoder: CaptionEncoder, captions: list[str], batch_size: int) -> float:
    start = time.perf_counter()
    for index in range(0, len(captions), batch_size):
        encoder.encode(captions[index : index + batch_size])
    return len(captions) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("captions", type=Path, nargs="?", default=REPO / "../shared/data/fashion-products/captions.jsonl")
    parser.add_argument("--num-captions", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--encoder", default="minilm")
    parser.add_argument("--max-length", type=int, default=64)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    captions = read_captions(args.captions, args.num_captions)
    config = TextConfig(encoder=args.encoder, max_length=args.max_length, batch_size=args.batch_size, cache_dir="")
    cold_encoder = CaptionEncoder(config)
    cold_encoder.encode(captions[: args.batch_size])  # warm up allocator and kernels before timing
    cold = captions_per_second(cold_encoder, captions, args.batch_size)
    with tempfile.TemporaryDirectory() as cache_dir:
        cached_encoder = CaptionEncoder(replace(config, cache_dir=cache_dir))
        fill = captions_per_second(cached_encoder, captions, args.batch_size)
        warm = captions_per_second(cached_encoder, captions, args.batch_size)
        cache_bytes = sum(file.stat().st_size for file in Path(cache_dir).iterdir())
        hits, misses = cached_encoder.cache.hits, cached_encoder.cache.misses
    result = {
        "encoder": cold_encoder.identity,
        "num_captions": len(captions),
        "distinct_captions": len(set(captions)),
        "batch_size": args.batch_size,
        "threads": torch.get_num_threads(),
        "cold_captions_per_s": round(cold, 1),
        "fill_captions_per_s": round(fill, 1),
        "warm_captions_per_s": round(warm, 1),
        "warm_over_cold": round(warm / cold, 1),
        "cache_hits": hits,
        "cache_misses": misses,
        "cache_kb_per_caption": round(cache_bytes / 1024 / max(misses, 1), 1),
        "num_truncated": cold_encoder.num_truncated,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
