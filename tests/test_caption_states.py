"""Caption states served from one memory-mapped file: the same tensors as SQLite, read by other processes without a
query, written by one process at a time, refused or written again when broken, never used for another caption set;
and the caption precompute shared between ranks. Real SQLite caches, real files, real second processes."""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from fashiongen.data import FashionDataset
from fashiongen.text import CachedEmbedding, CaptionEncoder, CaptionStates, EmbeddingCache, StatesFileError, resident_states
from fashiongen.text.cache import caption_key
from fashiongen.text.states import captions_digest, states_path
from fashiongen.train.data import DiffusionExamples, collate_examples, precompute_captions, rank_of, run_captions
from training_helpers import tiny_config

REPO = Path(__file__).resolve().parents[1]


def random_cache(directory: Path, count: int, dim: int = 16, identity: str = "enc-test") -> tuple[EmbeddingCache, list[str]]:
    """A real SQLite cache of `count` captions with random states of 1..24 tokens."""
    generator = torch.Generator().manual_seed(count)
    cache = EmbeddingCache(directory, identity)
    captions = [f"caption {i}" for i in range(count)]
    lengths = torch.randint(1, 25, (count,), generator=generator).tolist()
    cache.put_many((caption, CachedEmbedding(torch.randn(length, dim, generator=generator), torch.randn(dim, generator=generator),
                                             length > 20)) for caption, length in zip(captions, lengths))
    return cache, captions


def states_digest(cache: EmbeddingCache, captions: list[str]) -> str:
    """sha256 over every caption's token states, pooled vector and truncation flag as `cache` returns them."""
    digest = hashlib.sha256()
    for item in cache.get_many(captions):
        digest.update(item.token_states.numpy().tobytes() + item.pooled.numpy().tobytes() + bytes([item.truncated]))
    return digest.hexdigest()


def test_examples_get_the_same_tensors_from_the_array_as_from_sqlite(garments16: Path, tmp_path: Path) -> None:
    config = tiny_config(garments16, tmp_path / "runs", tmp_path / "cache")
    dataset = FashionDataset.from_config(config.data)
    encoder = CaptionEncoder(config.text)
    assert precompute_captions(encoder, [dataset], show_progress=False) == 17  # 16 captions and ""
    assert encoder.cache.resident is not None and len(encoder.cache.resident) == 17
    common = dict(vocab={}, seed=0, num_train_timesteps=1000, caption_dropout_prob=0.3)
    mapped = DiffusionExamples(dataset, encoder.cache, **common)
    queried = DiffusionExamples(dataset, EmbeddingCache(config.text.cache_dir, encoder.identity), **common)  # SQLite only
    assert queried.text_cache.resident is None
    for index in range(len(dataset)):
        a, b = mapped[index], queried[index]
        assert a["text_states"].dtype == b["text_states"].dtype == torch.float32
        assert a["text_states"].equal(b["text_states"]) and a["text_pooled"].equal(b["text_pooled"])  # bitwise
    assert {mapped[i]["caption"] for i in range(16)} & {""}  # dropout reached the empty caption too

    worker_copy = pickle.loads(pickle.dumps(mapped))  # what a spawned DataLoader worker receives
    for index in range(len(dataset)):
        assert worker_copy[index]["text_states"].equal(queried[index]["text_states"])
    assert worker_copy.text_cache._connection is None  # every lookup came from the map: SQLite was never opened

    in_workers = DataLoader(mapped, batch_size=8, num_workers=2, collate_fn=collate_examples,
                            multiprocessing_context="fork")  # two worker processes read the one map
    in_process = DataLoader(queried, batch_size=8, num_workers=0, collate_fn=collate_examples)
    for a, b in zip(in_workers, in_process, strict=True):
        assert a["text_states"].equal(b["text_states"]) and a["text_mask"].equal(b["text_mask"])
        assert a["text_pooled"].equal(b["text_pooled"])

    again = CaptionEncoder(config.text)  # a later run: nothing to encode, the same file mapped again
    assert precompute_captions(again, [dataset], show_progress=False) == 0
    assert again.cache.resident.path == encoder.cache.resident.path
    text = again.encode(["a caption of no data set"])  # not in the array: encoded and stored in SQLite as before
    assert again.cache.get_many(["a caption of no data set"])[0].pooled.equal(text.pooled[0])


_SECOND_PROCESS = """
import hashlib, json, sys
from fashiongen.text import CaptionStates
from fashiongen.text.cache import caption_key
path, identity, digest, captions = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
states, total = CaptionStates(path, identity, digest), hashlib.sha256()
for caption in captions:
    item = states.get(caption_key(caption))
    total.update(item.token_states.numpy().tobytes() + item.pooled.numpy().tobytes() + bytes([item.truncated]))
print(total.hexdigest())
"""


@pytest.mark.slow  # Python subprocesses
def test_a_second_python_process_reads_the_same_states(tmp_path: Path) -> None:
    cache, captions = random_cache(tmp_path, 300)
    expected = states_digest(cache, captions)
    states = resident_states(cache, captions)
    cache.attach(states)
    assert states_digest(cache, captions) == expected
    result = subprocess.run([sys.executable, "-c", _SECOND_PROCESS, str(states.path), cache.identity, states.digest,
                             json.dumps(captions)], capture_output=True, text=True, timeout=120, cwd=REPO, check=True)
    assert result.stdout.strip() == expected


def test_a_truncated_file_is_written_again_and_a_foreign_one_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache, captions = random_cache(tmp_path, 50)
    expected = states_digest(cache, captions)
    path = resident_states(cache, captions).path
    size = path.stat().st_size
    with open(path, "r+b") as handle:
        handle.truncate(size - 100)  # a copy cut short
    with caplog.at_level(logging.WARNING, logger="fashiongen.text"):
        cache.attach(resident_states(cache, captions))
    assert any(str(path) in record.getMessage() and "truncated" in record.getMessage() for record in caplog.records)
    assert path.stat().st_size == size and states_digest(cache, captions) == expected

    path.write_bytes(b"PK\x03\x04 something else entirely")
    with pytest.raises(StatesFileError) as refused:
        resident_states(cache, captions)
    message = str(refused.value)
    assert message.startswith(f"{path}: not a caption-states file") and "\n" not in message  # one line naming it
    path.unlink()

    resident_states(cache, captions)
    other, _ = random_cache(tmp_path, 50, identity="enc-other")  # same captions, another encoder
    foreign = states_path(other, captions_digest(caption_key(c) for c in captions))
    foreign.write_bytes(path.read_bytes())
    with pytest.raises(StatesFileError, match=f"{foreign}: holds states of encoder 'enc-test', not 'enc-other'"):
        resident_states(other, captions)


def test_a_changed_set_of_captions_never_reads_the_old_array(tmp_path: Path) -> None:
    cache, captions = random_cache(tmp_path, 40)
    old = resident_states(cache, captions)
    changed = captions[:-1] + ["a caption written after the data set changed"]
    cache.put_many([(changed[-1], CachedEmbedding(torch.ones(3, 16), torch.ones(16), False))])
    new = resident_states(cache, changed)
    assert new.path != old.path and old.path.exists()
    assert new.get(caption_key(changed[-1])).token_states.equal(torch.ones(3, 16))
    assert new.get(caption_key(captions[-1])) is None and old.get(caption_key(changed[-1])) is None
    new.path.unlink()
    os.link(old.path, new.path)  # the old array under the new set's name
    with pytest.raises(StatesFileError, match="another set of captions"):
        resident_states(cache, changed)


def _build_and_read(cache: EmbeddingCache, captions: list[str], results: "multiprocessing.Queue[str]") -> None:
    states = resident_states(cache, captions, stall_timeout_s=60)
    cache.attach(states)
    results.put(states_digest(cache, captions))


def test_concurrent_writers_leave_one_sound_file(tmp_path: Path) -> None:
    cache, captions = random_cache(tmp_path, 3000, dim=64)  # ~2.5 MB of states: the writers overlap
    expected = states_digest(cache, captions)
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    writers = [context.Process(target=_build_and_read, args=(cache, captions, results)) for _ in range(3)]
    for writer in writers:
        writer.start()
    digests = [results.get(timeout=120) for _ in writers]
    for writer in writers:
        writer.join(timeout=60)
        assert writer.exitcode == 0
    assert digests == [expected] * 3
    states = CaptionStates(states_path(cache, captions_digest(caption_key(c) for c in captions)), cache.identity,
                           captions_digest(caption_key(c) for c in captions))
    assert len(states) == 3000
    assert not list(tmp_path.glob(".*.tmp"))  # no writer's temporary left behind


_RANK = """
import json, sys
from fashiongen.config import load_config
from fashiongen.data import FashionDataset
from fashiongen.text import CaptionEncoder
from fashiongen.train.data import precompute_captions
config = load_config([], json.loads(sys.argv[3]))
encoder = CaptionEncoder(config.text)
count = precompute_captions(encoder, [FashionDataset.from_config(config.data)], show_progress=False,
                            rank=int(sys.argv[1]), world_size=int(sys.argv[2]), stall_timeout_s=120)
print(json.dumps({"encoded": count, "states": str(encoder.cache.resident.path)}))
"""


@pytest.mark.slow  # Python subprocesses
def test_two_ranks_share_the_precompute_and_map_one_file(garments16: Path, tmp_path: Path) -> None:
    overrides = [f"data.source={garments16}", "data.resolution=32", "data.val_fraction=0", f"text.cache_dir={tmp_path / 'cache'}"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    ranks = [subprocess.Popen([sys.executable, "-c", _RANK, str(rank), "2", json.dumps(overrides)], cwd=REPO, env=environment,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in range(2)]
    outputs = []
    for rank in ranks:
        stdout, stderr = rank.communicate(timeout=300)
        assert rank.returncode == 0, stderr
        outputs.append(json.loads(stdout.strip().splitlines()[-1]))
    config = tiny_config(garments16, tmp_path / "runs", tmp_path / "cache")
    captions = run_captions([FashionDataset.from_config(config.data)])
    shares = [sum(rank_of(caption, 2) == rank for caption in captions) for rank in range(2)]
    assert [output["encoded"] for output in outputs] == shares and min(shares) > 0  # each encoded its own share
    assert outputs[0]["states"] == outputs[1]["states"] and len(list((tmp_path / "cache").glob("*.states"))) == 1

    alone = CaptionEncoder(tiny_config(garments16, tmp_path / "runs", tmp_path / "alone").text)  # one process, as before
    assert precompute_captions(alone, [FashionDataset.from_config(config.data)], show_progress=False) == len(captions)
    shared = EmbeddingCache(tmp_path / "cache", alone.identity)
    for a, b in zip(shared.get_many(captions), alone.cache.get_many(captions)):
        assert torch.allclose(a.token_states, b.token_states, atol=1e-5) and torch.allclose(a.pooled, b.pooled, atol=1e-5)


def test_a_rank_left_alone_times_out_naming_its_wait_and_a_later_run_resumes(garments16: Path, tmp_path: Path) -> None:
    config = tiny_config(garments16, tmp_path / "runs", tmp_path / "cache")
    dataset = FashionDataset.from_config(config.data)
    encoder = CaptionEncoder(config.text)
    captions = run_captions([dataset])
    others = sum(rank_of(caption, 2) == 1 for caption in captions)
    with pytest.raises(TimeoutError, match=f"{others} captions that the other 1 processes are encoding into {encoder.cache.path}"):
        precompute_captions(encoder, [dataset], show_progress=False, rank=0, world_size=2, stall_timeout_s=1.5)
    assert len(encoder.cache.missing(captions)) == others  # rank 0's share stayed in the cache
    assert precompute_captions(CaptionEncoder(config.text), [dataset], show_progress=False) == others  # only the rest
