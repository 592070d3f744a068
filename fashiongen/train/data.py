"""Training examples: a dataset item plus all the randomness of its diffusion step, drawn per example.

Noise, timestep, caption dropout and attribute dropout come from a generator seeded by
(seed, epoch, index), in DataLoader workers. So a run's result does not depend on batch layout:
two processes with batch 4 see exactly the examples and noise one process with batch 8 sees, and
a resumed run draws what the uninterrupted one would have. Caption embeddings are read from the
memory-mapped states of the run's captions that precompute_captions writes, so no text encoder runs during training
and no example waits on a query.
"""

from __future__ import annotations

import hashlib
import logging
import signal
from typing import Any, Iterator, Sequence

import torch
from torch.utils.data import Dataset, Sampler, get_worker_info
from tqdm import tqdm

from ..config import ConfigError
from ..data import DataError, FashionDataset, RecordError, Source
from ..data.captions import MISSING_VALUES
from ..data.records import iter_meta
from ..diffusion.superres import low_res_condition
from ..models import NONE_ATTRIBUTE
from ..text import CaptionEncoder, EmbeddingCache
from ..text.cache import caption_key
from ..text.states import STALL_TIMEOUT_S, resident_states, wait_with_progress

logger = logging.getLogger("fashiongen.train")

TOKEN_MULTIPLE = 8  # caption token states are padded to a multiple of this


def attribute_vocabulary(source: Source, names: Sequence[str]) -> dict[str, list[str]]:
    """Sorted known values of each attribute in `source` (id 0 is reserved for 'none')."""
    if not names:
        return {}
    values: dict[str, set[str]] = {name: set() for name in names}
    seen: set[str] = set()
    for meta in iter_meta(source):
        if isinstance(meta, RecordError):
            continue  # counted where the record itself is read
        seen.update(meta.attributes)
        for name in names:
            value = str(meta.attributes.get(name, "")).strip()
            if value.lower() not in MISSING_VALUES:
                values[name].add(value)
    for name in names:
        if not values[name]:
            raise ConfigError(f"model.attributes: '{name}' has no values in {source.path}; "
                              f"attributes there: {', '.join(sorted(seen)) or 'none'}")
    return {name: sorted(found) for name, found in values.items()}


def attribute_ids(attributes: dict[str, Any], vocab: dict[str, list[str]]) -> list[int]:
    """Ids of one example's attribute values (value i of the vocabulary has id i + 1; unknown is 0)."""
    ids = []
    for name, values in vocab.items():
        value = str(attributes.get(name, "")).strip()
        ids.append(values.index(value) + 1 if value in values else NONE_ATTRIBUTE)
    return ids


def example_seed(seed: int, epoch: int, index: int) -> int:
    digest = hashlib.blake2b(f"diffusion:{seed}:{epoch}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class EpochSampler(Sampler[int]):
    """A seeded permutation per epoch, cut to a multiple of the global batch so every step is full."""

    def __init__(self, size: int, seed: int, multiple: int) -> None:
        if size < multiple:
            raise ConfigError(f"train.batch_size x processes x gradient_accumulation_steps = {multiple} "
                              f"is larger than the dataset ({size} examples)")
        self.size, self.seed, self.multiple = size, seed, multiple
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        yield from torch.randperm(self.size, generator=generator)[: len(self)].tolist()

    def __len__(self) -> int:
        return self.size // self.multiple * self.multiple


class DataLoaderWorkerError(DataError):
    """A defective record (with data.skip_bad_records off) met while preparing an example, maybe in a DataLoader worker.

    torch re-raises a worker's exception in the main process by calling its class with the worker's formatted
    traceback; keeping only that traceback's last line keeps the message the record's, so train.py reports it as
    one `error:` line and exits 2, with workers as without (a RecordError, which takes two arguments, became a
    RuntimeError traceback there)."""

    def __init__(self, message: str) -> None:
        lines = [line for line in message.strip().splitlines() if line.strip()]
        last = lines[-1] if lines else message
        prefix = f"{type(self).__module__}.{type(self).__qualname__}: "
        super().__init__(last[len(prefix):] if last.startswith(prefix) else last)


class DiffusionExamples(Dataset):
    """FashionDataset items with noise [3, H, W], timestep, cached caption embedding and attribute ids."""

    def __init__(self, dataset: FashionDataset, text_cache: EmbeddingCache, vocab: dict[str, list[str]], *,
                 seed: int, num_train_timesteps: int, caption_dropout_prob: float = 0.0,
                 attribute_dropout_prob: float = 0.0, low_res_resolution: int = 0, low_res_noise_max: float = 0.0) -> None:
        self.dataset = dataset
        self.text_cache = text_cache
        self.vocab = vocab
        self.seed = seed
        self.num_train_timesteps = num_train_timesteps
        self.caption_dropout_prob = caption_dropout_prob
        self.attribute_dropout_prob = attribute_dropout_prob
        self.low_res_resolution = low_res_resolution
        self.low_res_noise_max = low_res_noise_max
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        try:
            example = self.dataset[index]  # skips defective records unless data.skip_bad_records is off
        except (RecordError, DataError) as error:
            if get_worker_info() is not None:
                # The run ends here: let the main process's exit stop this worker. Workers ignore SIGTERM (train/setup.py)
                # so a scheduler's signal cannot kill a run before it saves, but multiprocessing ends workers with
                # SIGTERM at exit, and an ignoring worker kept the failed run from ever exiting.
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
            raise DataLoaderWorkerError(str(error)) from None
        pixels = example["pixel_values"]  # [3, H, W]
        generator = torch.Generator().manual_seed(example_seed(self.seed, self.epoch, index))
        noise = torch.randn(pixels.shape, generator=generator)  # [3, H, W]
        timestep = torch.randint(0, self.num_train_timesteps, (), generator=generator)
        drop_caption = bool(torch.rand((), generator=generator) < self.caption_dropout_prob)
        drop_attribute = torch.rand(len(self.vocab), generator=generator) < self.attribute_dropout_prob  # [K]
        caption = "" if drop_caption else example["caption"]
        ids = torch.tensor(attribute_ids(example["attributes"], self.vocab), dtype=torch.long)  # [K]
        ids[drop_attribute | drop_caption] = NONE_ATTRIBUTE  # no caption means no conditioning at all
        (embedding,) = self.text_cache.get_many([caption])
        if embedding is None:
            raise RuntimeError(f"caption {caption!r} (example {index}) is not in the embedding cache "
                               f"{self.text_cache.path}; precompute_captions() must run before training")
        item = {"pixel_values": pixels, "noise": noise, "timestep": timestep, "text_states": embedding.token_states,
                "text_pooled": embedding.pooled, "attribute_ids": ids, "caption": caption, "index": index}
        if self.low_res_resolution:
            low_noise = torch.randn(3, self.low_res_resolution, self.low_res_resolution, generator=generator)
            level = float(torch.rand((), generator=generator)) * self.low_res_noise_max
            item["low_res"] = low_res_condition(pixels[None], self.low_res_resolution, low_noise[None], level)[0]
        return item


def collate_examples(examples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors; pad caption token states to the batch's longest, rounded up to TOKEN_MULTIPLE: [B, L, D], mask [B, L]."""
    longest = max(e["text_states"].shape[0] for e in examples)
    longest = -(-longest // TOKEN_MULTIPLE) * TOKEN_MULTIPLE  # few distinct shapes (torch.compile, tensor cores)
    dim = examples[0]["text_states"].shape[1]
    states = torch.zeros(len(examples), longest, dim)
    mask = torch.zeros(len(examples), longest, dtype=torch.bool)
    for row, e in enumerate(examples):
        states[row, : e["text_states"].shape[0]] = e["text_states"]
        mask[row, : e["text_states"].shape[0]] = True
    batch: dict[str, Any] = {
        key: torch.stack([e[key] for e in examples])
        for key in ("pixel_values", "noise", "timestep", "text_pooled", "attribute_ids", "low_res") if key in examples[0]
    }
    batch.update(text_states=states, text_mask=mask, caption=[e["caption"] for e in examples],
                 index=torch.tensor([e["index"] for e in examples]))
    return batch


def run_captions(datasets: Sequence[FashionDataset]) -> list[str]:
    """The distinct captions of `datasets` and the empty caption (caption dropout, guidance), in order of appearance."""
    captions = [""]
    for dataset in datasets:
        for index in range(len(dataset)):
            try:
                captions.append(dataset.caption(index))
            except RecordError:
                continue  # a defective record is skipped when it is read
    return list(dict.fromkeys(captions))


def rank_of(caption: str, world_size: int) -> int:
    """The process that encodes a caption: from its key alone, so the split does not depend on what others stored."""
    return int.from_bytes(caption_key(caption)[:8], "big") % world_size


def encode_captions(encoder: CaptionEncoder, captions: list[str], device: torch.device | str | None, show_progress: bool) -> None:
    """Encode `captions` into the encoder's cache, on `device` when given, at full float32 matmul precision: the cache
    is shared by runs on any device, so a GPU's TF32 (a training setting) must not leak into its states."""
    home, precision = encoder.device, torch.get_float32_matmul_precision()
    if device is not None:
        encoder.to(device)
    torch.set_float32_matmul_precision("highest")
    try:
        chunk = max(encoder.config.batch_size * 16, 1)
        for start in tqdm(range(0, len(captions), chunk), desc="encoding captions", unit="chunk",
                          disable=not show_progress or not captions):
            encoder.encode(captions[start : start + chunk])
    finally:
        torch.set_float32_matmul_precision(precision)
        encoder.to(home)


def precompute_captions(encoder: CaptionEncoder, datasets: Sequence[FashionDataset], show_progress: bool = True, *,
                        rank: int = 0, world_size: int = 1, device: torch.device | str | None = None,
                        stall_timeout_s: float = STALL_TIMEOUT_S) -> int:
    """Store every caption of `datasets` (and "") in the encoder's cache, then serve them from one memory-mapped
    array (text/states.py) that every process and worker shares; returns how many captions this process encoded.

    With several processes (rank of world_size; call it in all of them at once) each encodes its share of the missing
    captions, on `device` when given, and waits for the others' (logged; TimeoutError after stall_timeout_s without
    progress). SQLite serialises the writes, and what a killed run wrote stays. One process writes the array.
    """
    cache = encoder.cache
    if cache is None:
        raise ValueError("precompute_captions needs an encoder with an embedding cache (text.cache_dir)")
    captions = run_captions(datasets)
    missing = cache.missing(captions)
    mine = [caption for caption in missing if rank_of(caption, world_size) == rank]
    encode_captions(encoder, mine, device, show_progress)
    others = [caption for caption in missing if rank_of(caption, world_size) != rank]

    def others_stored() -> bool:
        others[:] = cache.missing(others)  # only what was still missing is asked again
        return not others

    if others:
        wait_with_progress(f"{len(others)} captions that the other {world_size - 1} processes are encoding into {cache.path}",
                           others_stored, lambda: len(others), stall_timeout_s)
    cache.attach(resident_states(cache, captions, stall_timeout_s))
    return len(mine)
