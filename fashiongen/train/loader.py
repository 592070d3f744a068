"""The training DataLoader every family uses: workers that live for the whole run, with the epoch travelling beside
each index; pinned batches copied to the GPU without blocking (Accelerate's loader, set up in setup.make_accelerator);
caption states padded to a few fixed lengths when the network is compiled.

    loader = make_loader(examples, batch_size, config.train, sampler)                       # training: full batches
    loader = make_loader(examples, batch_size, config.train, sampler, compile_lengths(64))  # torch.compile: 3 shapes

Why the epoch travels with the index: every random choice of an example derives from (seed, epoch, index) (data.py),
and a persistent worker holds its own copy of the dataset, made once, so `set_epoch` in the main process would not
reach it. The sampler's (epoch, index) pairs do, so a run draws the same examples with 0, 2 or 8 workers.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .data import TOKEN_MULTIPLE, collate_examples

PREFETCH_BATCHES = 8  # batches the workers prepare ahead of the step, together (torch's default: 2 per worker)


def compile_lengths(max_length: int) -> tuple[int, ...]:
    """The caption lengths a compiled network sees: powers of two from 16, then text.max_length rounded up to
    TOKEN_MULTIPLE: 3 shapes for 64 tokens (16, 32, 64), 4 for 128, 5 for 256; under dynamo's recompile limit (8)
    up to 1024 tokens. Without compile a batch is padded to its longest caption (up to max_length / 8 shapes)."""
    longest = -(-max_length // TOKEN_MULTIPLE) * TOKEN_MULTIPLE
    lengths, length = [], 16
    while length < longest:
        lengths.append(length)
        length *= 2
    return (*lengths, longest)


@dataclass(frozen=True)
class Collate:
    """collate_examples, then caption states [B, L, D] and their mask [B, L] padded up to the first of `lengths` that
    holds them (none: as collated). Picklable, for the workers."""

    lengths: tuple[int, ...] = ()

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = collate_examples(examples)
        states, mask = batch["text_states"], batch["text_mask"]
        length = next((n for n in self.lengths if n >= states.shape[1]), states.shape[1])
        if length > states.shape[1]:
            batch["text_states"] = torch.cat([states, states.new_zeros(states.shape[0], length - states.shape[1], states.shape[2])], 1)
            batch["text_mask"] = torch.cat([mask, mask.new_zeros(mask.shape[0], length - mask.shape[1])], 1)
        return batch


class EpochIndices(Sampler):
    """An epoch sampler's indices as (epoch, index) pairs, for `EpochExamples`; set_epoch goes to the sampler."""

    def __init__(self, sampler: Any) -> None:
        self.sampler = sampler

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.sampler.epoch
        return ((epoch, index) for index in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)


class EpochExamples(Dataset):
    """A dataset with `set_epoch`, read by (epoch, index): the copy in each worker moves to the pair's epoch itself."""

    def __init__(self, examples: Any) -> None:
        self.examples, self.epoch = examples, None

    def set_epoch(self, epoch: int) -> None:
        self.examples.set_epoch(epoch)
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        if epoch != self.epoch:
            self.set_epoch(epoch)
        return self.examples[index]


def _leave_stop_signals_to_the_main_process(worker_id: int) -> None:
    """DataLoader workers ignore SIGTERM/SIGINT: a scheduler (or Ctrl-C) signals the whole process group, and a
    worker dying of it would kill the run before the main process saves its checkpoint."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def make_loader(dataset: Any, batch_size: int, config: Any, sampler: Any = None, lengths: tuple[int, ...] = ()) -> DataLoader:
    """A DataLoader over training examples (`config`: the train section, for num_workers). With a sampler (the
    training loader): full batches, (epoch, index) pairs and workers kept for the whole run; without (validation):
    workers for one pass. Pinned memory on CUDA. `lengths`: caption lengths to pad to (`compile_lengths`)."""
    workers = config.num_workers
    if sampler is not None:
        dataset, sampler = EpochExamples(dataset), EpochIndices(sampler)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, shuffle=False, drop_last=sampler is not None,
                      num_workers=workers, collate_fn=Collate(tuple(lengths)), pin_memory=torch.cuda.is_available(),
                      persistent_workers=bool(workers) and sampler is not None,
                      prefetch_factor=max(2, -(-PREFETCH_BATCHES // workers)) if workers else None,
                      worker_init_fn=_leave_stop_signals_to_the_main_process if workers else None)


def shut_down_workers(loader: Any) -> None:
    """Stop a loader's persistent workers now (the run's end, or an error). Left to garbage collection at interpreter
    exit, a worker blocked on a full queue of prefetched batches kept a finished run from exiting (torch keeps the
    live iterator in the private `_iterator`; Accelerate's loaders are DataLoader subclasses and hold it the same way)."""
    iterator = getattr(loader, "_iterator", None)
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()
        loader._iterator = None


__all__ = ["Collate", "EpochExamples", "EpochIndices", "PREFETCH_BATCHES", "compile_lengths", "make_loader",
           "shut_down_workers"]
