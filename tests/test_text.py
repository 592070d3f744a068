"""Caption encoder and embedding cache: real MiniLM, tiny random CLIP/T5 encoders, a real SQLite cache."""

from __future__ import annotations

import logging
import multiprocessing
import pickle
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fashiongen.config import TextConfig
from fashiongen.text import CachedEmbedding, CaptionEncoder, EmbeddingCache, EncoderNotFoundError, masked_mean, resident_states
from fashiongen.text.cache import caption_key
from fashiongen.text.encoder import _minilm_path, content_hash

CAPTIONS = [
    "red silk evening dress",
    "Palm Tree Girls Sp Jace Sko White Skirts",
    "",
    "black leather ankle boots with a block heel and a side zip",
    "blue jeans",
]
LONG_CAPTION = "a navy wool double breasted coat with gold buttons, notch lapels and two flap pockets"  # > 8 tokens
TOKENIZER_FILES = ["vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]


@pytest.fixture(scope="module")
def minilm() -> CaptionEncoder:
    return CaptionEncoder(TextConfig(cache_dir=""))


def token_counts(encoder: CaptionEncoder, captions: list[str]) -> list[int]:
    return [len(ids) for ids in encoder.tokenizer(captions, truncation=True, max_length=encoder.max_length)["input_ids"]]


def test_shapes_dtypes_and_padding_to_longest(minilm: CaptionEncoder) -> None:
    text = minilm.encode(CAPTIONS)
    counts = token_counts(minilm, CAPTIONS)
    assert minilm.dim == 384
    assert text.token_states.shape == (len(CAPTIONS), max(counts), 384)  # padded to the longest, not max_length
    assert text.mask.shape == (len(CAPTIONS), max(counts)) and text.mask.dtype == torch.bool
    assert text.pooled.shape == (len(CAPTIONS), 384)
    assert text.token_states.dtype == text.pooled.dtype == torch.float32
    assert text.lengths.tolist() == counts
    assert text.mask.equal(torch.arange(max(counts)) < torch.tensor(counts)[:, None])  # real tokens first
    assert text.token_states[~text.mask].abs().sum() == 0  # padding holds zeros
    assert torch.allclose(text.pooled.norm(dim=-1), torch.ones(len(CAPTIONS)), atol=1e-5)


def test_pooled_matches_sentence_transformers(minilm: CaptionEncoder) -> None:
    sentence_transformers = pytest.importorskip("sentence_transformers")
    reference = sentence_transformers.SentenceTransformer(str(_minilm_path()), device="cpu", local_files_only=True)
    expected = reference.encode(CAPTIONS, convert_to_tensor=True, normalize_embeddings=True)  # [B, D]
    assert torch.allclose(minilm.encode(CAPTIONS).pooled, expected.cpu(), atol=1e-5)


def test_deterministic_and_independent_of_batch_neighbours(minilm: CaptionEncoder) -> None:
    first, second = minilm.encode(CAPTIONS), minilm.encode(CAPTIONS)
    assert first.token_states.equal(second.token_states) and first.pooled.equal(second.pooled)
    reversed_text = minilm.encode(CAPTIONS[::-1])
    assert torch.allclose(reversed_text.pooled.flip(0), first.pooled, atol=1e-5)
    for row, caption in enumerate(CAPTIONS):
        alone = minilm.encode([caption])
        length = alone.lengths.item()
        assert torch.allclose(alone.token_states[0, :length], first.token_states[row, :length], atol=1e-5)
        assert torch.allclose(alone.pooled[0], first.pooled[row], atol=1e-5)


def test_duplicates_get_identical_rows(minilm: CaptionEncoder) -> None:
    text = minilm.encode(["blue jeans", "", "blue jeans", ""])
    assert text.token_states[0].equal(text.token_states[2]) and text.pooled[1].equal(text.pooled[3])


def test_empty_caption_is_the_unconditional_input(minilm: CaptionEncoder) -> None:
    unconditional = minilm.encode_unconditional(3)
    assert unconditional.token_states.shape == (3, 2, 384)  # [CLS] [SEP]
    assert unconditional.mask.all()
    assert torch.isfinite(unconditional.token_states).all() and torch.isfinite(unconditional.pooled).all()
    assert unconditional.pooled[0].equal(unconditional.pooled[2])
    assert torch.allclose(unconditional.pooled[0], minilm.encode(["", "blue jeans"]).pooled[0], atol=1e-5)
    assert minilm.encode([]).token_states.shape == (0, 0, 384)


def test_frozen_and_outputs_usable_in_training(minilm: CaptionEncoder) -> None:
    assert not minilm.model.training
    assert not any(parameter.requires_grad for parameter in minilm.model.parameters())
    text = minilm.encode(CAPTIONS[:2])
    assert not text.token_states.is_inference()  # an inference tensor could not be saved for backward
    projection = torch.nn.Linear(384, 8)
    projection(text.token_states).sum().backward()  # [B, L, 8]
    assert projection.weight.grad is not None
    with pytest.raises(TypeError, match="sequence of captions"):
        minilm.encode("one caption")


def test_truncation_warns_once_per_call_and_counts(caplog: pytest.LogCaptureFixture) -> None:
    encoder = CaptionEncoder(TextConfig(max_length=8, cache_dir=""))
    with caplog.at_level(logging.WARNING, logger="fashiongen.text"):
        text = encoder.encode([LONG_CAPTION, "blue jeans", LONG_CAPTION + " again"])
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1 and "truncated 2 of 3" in warnings[0].getMessage()
    assert encoder.num_truncated == 2
    assert text.lengths.tolist() == [8, 4, 8]
    encoder.encode(["blue jeans"])
    assert encoder.num_truncated == 2


def test_cache_hits_return_identical_results(tmp_path: Path, minilm: CaptionEncoder) -> None:
    config = TextConfig(cache_dir=str(tmp_path / "cache"), max_length=8)
    encoder = CaptionEncoder(config)
    captions = CAPTIONS + [LONG_CAPTION, "blue jeans"]  # a duplicate and a truncated caption
    num_long = sum(len(ids) > 8 for ids in encoder.tokenizer(captions)["input_ids"])
    cold = encoder.encode(captions)
    assert (encoder.cache.hits, encoder.cache.misses, len(encoder.cache)) == (0, 6, 6)
    warm = encoder.encode(captions[::-1])
    assert (encoder.cache.hits, encoder.cache.misses) == (6, 6)
    assert warm.token_states.flip(0).equal(cold.token_states) and warm.pooled.flip(0).equal(cold.pooled)  # fp32: exact
    assert warm.mask.flip(0).equal(cold.mask)
    assert num_long >= 2 and encoder.num_truncated == 2 * num_long  # remembered for cached captions too
    uncached = CaptionEncoder(replace(config, cache_dir="")).encode(captions)
    assert uncached.token_states.equal(cold.token_states) and uncached.pooled.equal(cold.pooled)

    reopened = CaptionEncoder(config)  # a later run or another process
    again = reopened.encode(captions[:3] + ["a new caption"])
    assert (reopened.cache.hits, reopened.cache.misses) == (3, 1)
    assert again.pooled[:3].equal(cold.pooled[:3])


def test_cache_is_keyed_by_encoder_identity(tmp_path: Path, minilm: CaptionEncoder) -> None:
    base = CaptionEncoder(TextConfig(cache_dir=str(tmp_path)))
    base.encode(CAPTIONS)
    shorter = CaptionEncoder(TextConfig(cache_dir=str(tmp_path), max_length=32))
    unnormalized = CaptionEncoder(TextConfig(cache_dir=str(tmp_path), normalize_pooled=False))
    assert len({base.identity, shorter.identity, unnormalized.identity}) == 3
    assert base.identity.startswith("minilm-") and "-L64-" in base.identity
    assert shorter.cache.path != base.cache.path
    shorter.encode(CAPTIONS)
    assert (shorter.cache.hits, shorter.cache.misses) == (0, len(CAPTIONS))
    assert unnormalized.encode(CAPTIONS[:1]).pooled.norm() > 1.01  # not served base's normalised vectors
    assert unnormalized.cache.hits == 0


def test_content_hash_follows_weights_not_names(tmp_path: Path) -> None:
    model_dir = _minilm_path()
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ["config.json", *TOKENIZER_FILES]:
        shutil.copy(model_dir / name, copy / name)
    (copy / "model.safetensors").write_bytes(b"not the real weights")
    (copy / "README.md").write_text("ignored")
    assert content_hash(copy) != content_hash(model_dir)
    renamed = tmp_path / "renamed"
    shutil.copytree(copy, renamed)
    (renamed / "README.md").write_text("a different readme")
    assert content_hash(renamed) == content_hash(copy)


def test_bad_encoder_path_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(EncoderNotFoundError, match=f"{missing}.*does not exist.*model directory"):
        CaptionEncoder(TextConfig(encoder=str(missing), cache_dir=""))
    with pytest.raises(FileNotFoundError, match=f"{tmp_path}.*no config.json"):
        CaptionEncoder(TextConfig(encoder=str(tmp_path), cache_dir=""))
    with pytest.raises(ValueError, match="text.dtype"):
        CaptionEncoder(TextConfig(dtype="float64", cache_dir=""))


def save_tiny_encoder(model: torch.nn.Module, directory: Path) -> Path:
    """Save a tiny model with MiniLM's tokenizer files beside it, as a local Hugging Face model directory."""
    model.save_pretrained(directory)
    for name in TOKENIZER_FILES:
        shutil.copy(_minilm_path() / name, directory / name)
    return directory


@pytest.fixture(scope="module")
def tiny_encoders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    vocab_size = 30522  # MiniLM's tokenizer; [PAD]=0, [CLS]=101, [SEP]=102
    root = tmp_path_factory.mktemp("tiny-encoders")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        clip = CLIPTextModel(CLIPTextConfig(
            vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            max_position_embeddings=32, pad_token_id=0, bos_token_id=101, eos_token_id=102,
        ))
        t5 = T5EncoderModel(T5Config(
            vocab_size=vocab_size, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2,
            pad_token_id=0, eos_token_id=102, decoder_start_token_id=0,
        ))
    return {"clip": save_tiny_encoder(clip, root / "tiny-clip"), "t5": save_tiny_encoder(t5, root / "tiny-t5")}


@pytest.mark.parametrize("kind", ["clip", "t5"])
def test_tiny_clip_and_t5_encoders_load_from_a_directory(kind: str, tiny_encoders: dict[str, Path], tmp_path: Path) -> None:
    encoder = CaptionEncoder(TextConfig(encoder=str(tiny_encoders[kind]), max_length=16, cache_dir=str(tmp_path)))
    text = encoder.encode(CAPTIONS)
    counts = token_counts(encoder, CAPTIONS)
    assert encoder.dim == 32 and encoder.model_type == {"clip": "clip_text_model", "t5": "t5"}[kind]
    assert encoder.identity.startswith(f"tiny-{kind}-") and encoder.identity.endswith("-L16-float32-norm")
    assert text.token_states.shape == (len(CAPTIONS), max(counts), 32) and text.pooled.shape == (len(CAPTIONS), 32)
    assert text.lengths.tolist() == counts
    if kind == "clip":  # pooled = pooler_output: the final state at the end-of-text token ([SEP] here)
        last = text.token_states[torch.arange(len(CAPTIONS)), text.lengths - 1]  # [B, D]
        expected = F.normalize(last, dim=-1)
    else:
        expected = F.normalize(masked_mean(text.token_states, text.mask), dim=-1)
    assert torch.allclose(text.pooled, expected, atol=1e-5)
    assert encoder.encode(CAPTIONS).pooled.equal(text.pooled) and encoder.cache.hits == len(CAPTIONS)


def test_max_length_beyond_position_embeddings_is_refused(tiny_encoders: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="exceeds the 32 positions"):
        CaptionEncoder(TextConfig(encoder=str(tiny_encoders["clip"]), max_length=64, cache_dir=""))


def random_embedding(generator: torch.Generator, length: int, dim: int = 6) -> CachedEmbedding:
    return CachedEmbedding(torch.randn(length, dim, generator=generator), torch.randn(dim, generator=generator), length > 4)


def test_embedding_cache_round_trip_and_identity_check(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    items = {f"caption {i}": random_embedding(generator, length=i + 1) for i in range(6)}
    cache = EmbeddingCache(tmp_path, "enc-a")
    cache.put_many(items.items())
    cache.put_many(items.items())  # storing twice keeps one row each
    restored = pickle.loads(pickle.dumps(cache))  # as a spawned DataLoader worker receives it
    found = restored.get_many(["caption 5", "unknown", "caption 0"])
    restored.close()
    assert found[1] is None
    for caption, item in (("caption 5", found[0]), ("caption 0", found[2])):
        assert item.token_states.equal(items[caption].token_states) and item.pooled.equal(items[caption].pooled)
        assert item.truncated == items[caption].truncated
    assert len(cache) == 6
    assert EmbeddingCache(tmp_path, "enc-b").get_many(list(items)) == [None] * 6
    cache.close()  # the last connection to close folds the write-ahead log into the file
    (tmp_path / "enc-a.sqlite").rename(tmp_path / "enc-c.sqlite")
    with pytest.raises(ValueError, match="enc-a"):
        EmbeddingCache(tmp_path, "enc-c")


def test_missing_reads_keys_only_and_a_resident_array_answers_first(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(1)
    items = {f"caption {i}": random_embedding(generator, length=i + 2) for i in range(4)}
    cache = EmbeddingCache(tmp_path, "enc-a")
    cache.put_many(items.items())
    assert cache.missing(["caption 1", "new", "caption 3", "new", "other"]) == ["new", "other"]
    assert cache.shapes([caption_key("caption 3"), caption_key("new")]) == {caption_key("caption 3"): (5, 6, True)}
    assert (cache.hits, cache.misses) == (0, 0)  # bulk checks are not lookups
    cache.attach(resident_states(cache, list(items)))
    found = cache.get_many(["caption 0", "unknown", "caption 3", "caption 0"])
    assert found[1] is None and (cache.hits, cache.misses) == (2, 1)
    for caption, item in (("caption 0", found[0]), ("caption 3", found[2])):
        assert item.token_states.equal(items[caption].token_states) and item.pooled.equal(items[caption].pooled)
        assert item.truncated == items[caption].truncated
    cache.put_many([("caption 9", random_embedding(generator, length=2))])  # stored after the array: from SQLite
    assert cache.get_many(["caption 9"])[0] is not None


def _write_rows(cache: EmbeddingCache, worker: int) -> None:
    generator = torch.Generator().manual_seed(worker)
    for start in range(0, 40, 8):  # many small transactions, interleaved with the other workers
        cache.put_many((f"w{worker} c{i}", random_embedding(generator, 3)) for i in range(start, start + 8))


def test_embedding_cache_is_safe_across_processes(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path, "shared")  # opened before the fork, as a DataLoader's dataset would be
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_write_rows, args=(cache, worker)) for worker in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    assert len(cache) == 120
    assert all(item is not None for item in cache.get_many([f"w{w} c{i}" for w in range(3) for i in range(40)]))


def test_command_line_reports_shapes_and_cache_hits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from fashiongen.text.__main__ import main

    captions_file = tmp_path / "captions.txt"
    captions_file.write_text("blue jeans\n" + LONG_CAPTION + "\n", encoding="utf-8")
    argv = ["encode", "red silk evening dress", "--file", str(captions_file), "--json",
            "--set", "text.max_length=8", "--set", f"text.cache_dir={tmp_path / 'cache'}"]
    for expected_hits in (0, 3):
        assert main(argv) == 0
        report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert report["token_states"] == [3, 8, 384] and report["pooled"] == [3, 384]
        assert report["num_truncated"] == 1 and report["cache_hits"] == expected_hits
