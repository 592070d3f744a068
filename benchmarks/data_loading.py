"""Random-access example throughput: bundled JPEG folder (decode + resize each time) vs the converted h5.

    python benchmarks/data_loading.py [--source ../shared/data/fashion-products] [--count 2000]

Converts the source once at --size (timed: the `convert` figure), then reads --count random
examples through FashionDataset from each, in this process, and prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from fashiongen.config import DataConfig
from fashiongen.data.convert import convert_source
from fashiongen.data.dataset import FashionDataset
from fashiongen.data.sources import open_source


def examples_per_second(dataset: FashionDataset, indices: np.ndarray) -> float:
    start = time.perf_counter()
    for index in indices:
        dataset[int(index)]
    return len(indices) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", default="../shared/data/fashion-products")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--count", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "converted.h5"
        converted = convert_source(open_source(args.source), out, resolution=args.size)
        indices = np.random.default_rng(0).integers(0, converted.num_records, args.count)
        jpeg = FashionDataset.from_config(DataConfig(source=args.source, split="all", resolution=args.size))
        h5 = FashionDataset.from_config(DataConfig(source=str(out), split="all", resolution=args.size))
        jpeg_rate, h5_rate = examples_per_second(jpeg, indices), examples_per_second(h5, indices)
    print(json.dumps({
        "convert_seconds": converted.seconds, "convert_images_per_second": converted.images_per_second,
        "converted_megabytes": round(converted.size_bytes / 2**20, 1), "records": converted.num_records,
        "jpeg_folder_examples_per_second": round(jpeg_rate, 1), "h5_examples_per_second": round(h5_rate, 1),
        "h5_over_jpeg": round(h5_rate / jpeg_rate, 2),
    }))


if __name__ == "__main__":
    main()
