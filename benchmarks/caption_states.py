"""Caption states per training example: one SQLite query each (before) vs the memory-mapped array (after).

    python benchmarks/caption_states.py [--source ../shared/data/fashion-products] [--count 3000] [--rounds 4]

Converts the source to a 64 px h5 once, precomputes its captions (configs/products64.yaml's caption mode) into a
text cache (--text-cache, default a fresh one: the precompute is timed), then times --count random training examples
(DiffusionExamples, caption dropout 0.1) read with caption states from SQLite and from the mapped array, in
alternating rounds so a slow spell of the shared machine hits both, and the caption-state lookup alone. Then a
second Python process reads every caption's states each way and reports its memory: the old precompute check read
them all into the process (every rank did); the map leaves them in the page cache, shared. Prints one JSON line and
writes it to --out.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fashiongen.config import load_config
from fashiongen.data.convert import convert_source
from fashiongen.data.dataset import FashionDataset
from fashiongen.data.sources import open_source
from fashiongen.text import CaptionEncoder, EmbeddingCache, resident_states
from fashiongen.train.data import DiffusionExamples, precompute_captions, run_captions

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from common import machine  # noqa: E402  (benchmarks/ is not a package)


def memory_facts() -> dict[str, float]:
    """This process's peak RSS and, at the end, its anonymous (its own heap) and file-backed (page cache, shared with
    every process mapping the same file) resident memory, in MiB."""
    status = {line.split(":")[0]: line.split()[1] for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("Vm")}
    facts = {"peak_rss_mib": int(status["VmHWM"]) / 1024}  # since exec (ru_maxrss would keep the parent's peak)
    rollup = {line.split(":")[0]: int(line.split()[1]) for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]}
    facts["anonymous_mib"] = rollup["Anonymous"] / 1024
    facts["file_backed_resident_mib"] = (rollup["Rss"] - rollup["Anonymous"]) / 1024
    return {key: round(value, 1) for key, value in facts.items()}


def read_all(how: str, cache_dir: str, identity: str, captions_file: str) -> None:
    """The second process: read every caption's states `how` ('sqlite': the old check, all at once; 'mapped'; 'none')."""
    captions = json.loads(Path(captions_file).read_text(encoding="utf-8"))
    cache = EmbeddingCache(cache_dir, identity)
    held: list[Any] = []  # kept until memory is measured
    if how == "sqlite":
        held = cache.get_many(captions)  # what precompute_captions did in every rank to find what was missing
    elif how == "mapped":
        cache.attach(resident_states(cache, captions))
        for caption in captions:
            cache.get_many([caption])
    print(json.dumps({"read": how, "captions_held_in_process": len(held), **memory_facts()}))


def second_process(how: str, cache_dir: str, identity: str, captions_file: str) -> dict[str, Any]:
    command = [sys.executable, __file__, "--read", how, cache_dir, identity, captions_file]
    result = subprocess.run(command, capture_output=True, text=True, check=True, cwd=REPO, timeout=1800)
    return json.loads(result.stdout.strip().splitlines()[-1])


def time_examples(examples: DiffusionExamples, indices: np.ndarray) -> float:
    """Seconds to build the examples at `indices`."""
    began = time.perf_counter()
    for index in indices:
        examples[int(index)]
    return time.perf_counter() - began


def time_lookups(cache: EmbeddingCache, captions: list[str]) -> float:
    """Seconds per single-caption lookup, as DiffusionExamples does one per example."""
    began = time.perf_counter()
    for caption in captions:
        cache.get_many([caption])
    return (time.perf_counter() - began) / len(captions)


def measure(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    converted = convert_source(open_source(args.source), folder / "products64.h5", resolution=64)
    config = load_config([REPO / "configs" / "products64.yaml"],
                         [f"data.source={folder / 'products64.h5'}", f"text.cache_dir={args.text_cache or folder / 'text'}"])
    dataset = FashionDataset.from_config(config.data, seed=config.seed)
    encoder = CaptionEncoder(config.text)
    began = time.perf_counter()
    encoded = precompute_captions(encoder, [dataset], show_progress=False)
    precompute_s = time.perf_counter() - began
    common: dict[str, Any] = dict(vocab={}, seed=0, num_train_timesteps=1000, caption_dropout_prob=0.1)
    queried_cache = EmbeddingCache(config.text.cache_dir, encoder.identity)
    mapped = DiffusionExamples(dataset, encoder.cache, **common)
    queried = DiffusionExamples(dataset, queried_cache, **common)
    indices = np.random.default_rng(0).integers(0, len(dataset), args.count)
    for examples in (mapped, queried):  # warm both: the page cache, h5 chunks, SQLite pages
        time_examples(examples, indices[:200])
    seconds = {"sqlite": 0.0, "mapped": 0.0}
    for _ in range(args.rounds):
        seconds["sqlite"] += time_examples(queried, indices)
        seconds["mapped"] += time_examples(mapped, indices)
    total = args.count * args.rounds
    captions = run_captions([dataset])
    sample = [captions[i] for i in np.random.default_rng(1).integers(0, len(captions), min(args.count, len(captions)))]
    lookup = {"sqlite": time_lookups(queried_cache, sample), "mapped": time_lookups(encoder.cache, sample)}
    captions_file = folder / "captions.json"
    captions_file.write_text(json.dumps(captions), encoding="utf-8")
    memory = {how: second_process(how, config.text.cache_dir, encoder.identity, str(captions_file)) for how in ("none", "sqlite", "mapped")}
    per_example = {how: seconds[how] / total for how in seconds}
    return {
        "benchmark": "caption_states", "source": args.source, "records": converted.num_records, "captions": len(captions),
        "tokens": encoder.cache.resident.num_tokens, "states_file_mib": round(encoder.cache.resident.path.stat().st_size / 2**20, 1),
        "precompute_seconds": round(precompute_s, 1), "captions_encoded": encoded, "examples_timed": total,
        "example_ms_sqlite": round(1000 * per_example["sqlite"], 3), "example_ms_mapped": round(1000 * per_example["mapped"], 3),
        "examples_per_second_sqlite": round(1 / per_example["sqlite"], 1), "examples_per_second_mapped": round(1 / per_example["mapped"], 1),
        "mapped_over_sqlite": round(per_example["sqlite"] / per_example["mapped"], 3),
        "lookup_us_sqlite": round(1e6 * lookup["sqlite"], 1), "lookup_us_mapped": round(1e6 * lookup["mapped"], 1),
        "lookup_share_of_example_sqlite": round(lookup["sqlite"] / per_example["sqlite"], 3),
        "lookup_share_of_example_mapped": round(lookup["mapped"] / per_example["mapped"], 3),
        "second_process_memory": memory, "machine": machine(torch.device("cpu")),
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--read":
        read_all(*sys.argv[2:6])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default=str(REPO.parent / "shared" / "data" / "fashion-products"))
    parser.add_argument("--count", type=int, default=3000, help="random examples per round and way")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--text-cache", default="", help="a text cache to reuse (default: a fresh one, precompute timed)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "caption_states.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        result = measure(args, Path(folder))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
