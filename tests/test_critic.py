"""The text-image critic: scoring math on hand-made embeddings, and a tiny critic trained on garment photos."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import GARMENTS, write_garment_set

from fashiongen.config import Config, ConfigError, load_config
from fashiongen.data import open_source
from fashiongen.evaluation.critic import (
    Critic,
    EncoderMismatchError,
    attribute_accuracy,
    critic_inception_score,
    critic_score,
    embed_captions,
    embed_images,
    inception_score,
    load_critic,
    r_precision,
    r_precision_draws,
)
from fashiongen.text import CaptionEncoder
from fashiongen.train import checkpoint_dirs
from fashiongen.train.critic import contrastive_loss, train_critic


def _unit(rows: int, dim: int, seed: int) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(rows, dim, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_r_precision_aligned_is_one_and_random_is_chance() -> None:
    emb = _unit(300, 64, 0)
    assert r_precision(emb, emb, num_distractors=99) == (1.0, 0.0)
    mean, std = r_precision(emb, _unit(300, 64, 1), num_distractors=9, num_draws=20)
    assert abs(mean - 0.1) < 0.03 and std < 0.05
    mean, _ = r_precision(emb, _unit(300, 64, 2), num_distractors=99)
    assert mean < 0.04


def test_r_precision_never_draws_a_duplicate_caption_as_distractor() -> None:
    # Items 2k and 2k+1 share a caption and a caption embedding; each image sits nearer the pair's text than any other.
    texts = _unit(50, 32, 3).repeat_interleave(2, dim=0)  # [100, 32]
    images = texts + 0.01 * _unit(100, 32, 4)
    ids = [f"caption {i // 2}" for i in range(100)]
    assert r_precision(images, texts, num_distractors=99, caption_ids=ids)[0] == 1.0
    assert r_precision(images, texts, num_distractors=99)[0] < 0.75  # as distinct captions, the twin ties or wins


def test_r_precision_with_few_items_uses_all_others() -> None:
    emb = _unit(12, 16, 5)
    per_draw, fewest = r_precision_draws(emb, emb, num_distractors=99, caption_ids=list("aabcdefghijk"))
    assert fewest == 10 and bool((per_draw == 1.0).all())


def test_critic_score_is_the_mean_cosine() -> None:
    a, b = _unit(20, 8, 6), _unit(20, 8, 7)
    mean, per_item = critic_score(a, a * 3.0)
    assert mean == pytest.approx(1.0) and per_item.shape == (20,)
    mean, per_item = critic_score(a, b)
    assert torch.allclose(per_item, (a * b).sum(-1), atol=1e-6) and mean == pytest.approx(float((a * b).sum(-1).mean()))
    assert critic_score(a, -a)[0] == pytest.approx(-1.0)


def test_inception_score_uniform_is_one_and_confident_even_is_num_classes() -> None:
    classes = 6
    assert inception_score(torch.full((120, classes), 1 / classes), splits=10)[0] == pytest.approx(1.0)
    one_hot = torch.eye(classes).repeat(20, 1)  # every split of 12 holds each class twice
    mean, std = inception_score(one_hot, splits=10)
    assert mean == pytest.approx(classes) and std == pytest.approx(0.0, abs=1e-9)


def test_contrastive_loss_ignores_duplicate_captions() -> None:
    text = _unit(4, 8, 8)
    text[1] = text[0]  # two items with one caption
    scale = torch.tensor(50.0)
    loss = contrastive_loss(text, text, scale, torch.tensor([0, 0, 1, 2]))
    assert bool(torch.isfinite(loss).all()) and float(loss.max()) < 1e-3  # without the mask items 0, 1 would pay log 2
    unmasked = contrastive_loss(text, text, scale, torch.arange(4))
    assert float(unmasked[0]) == pytest.approx(math.log(2), abs=1e-3)


def test_critic_is_of_a_head_with_uniform_or_one_hot_outputs() -> None:
    critic = Critic(resolution=16, channels=[4, 8], embed_dim=8, text_dim=4, text_hidden=8, token_attention=False,
                    vocab={"category": ["a", "b", "c", "d"]})
    images = np.random.default_rng(0).integers(0, 256, (40, 16, 16, 3), dtype=np.uint8)
    with torch.no_grad():
        critic.heads["category"].weight.zero_()
        critic.heads["category"].bias.zero_()
    assert critic_inception_score(critic, images, splits=4)[0] == pytest.approx(1.0)
    embeddings = torch.eye(8)[torch.arange(48) % 4]  # image i points along axis i % 4; each split of 12 holds each class 3x
    with torch.no_grad():
        critic.heads["category"].weight.copy_(20.0 * torch.eye(4, 8))
    assert critic_inception_score(critic, embeddings, splits=4)[0] == pytest.approx(4.0, rel=1e-3)
    with pytest.raises(ValueError, match="no 'season' head"):
        critic_inception_score(critic, embeddings, attribute="season")


# ---------------------------------------------------------------- a tiny critic trained on garment shapes

ATTRIBUTES = ["category", "colour"]


def _critic_config(source: Path, output_dir: Path, cache_dir: Path, **extra: object) -> Config:
    settings: dict[str, object] = {
        "data.source": source, "data.val_fraction": 0.25, "data.caption_mode": "raw", "text.cache_dir": cache_dir,
        "critic.resolution": 32, "critic.channels": "[8, 16, 16]", "critic.embed_dim": 32, "critic.text_hidden": 64,
        "critic.attributes": "[" + ", ".join(ATTRIBUTES) + "]", "critic.batch_size": 16, "critic.max_steps": 40,
        "critic.learning_rate": 3e-3, "critic.warmup_steps": 4, "critic.log_every": 1, "critic.validate_every": 0,
        "critic.checkpoint_every": 20, "critic.num_distractors": 7, "critic.output_dir": output_dir,
    }
    settings.update(extra)
    return load_config([], [f"{key}={value}" for key, value in settings.items()])


def _captions(root: Path) -> list[str]:
    return [json.loads(line)["caption"] for line in (root / "captions.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def garments(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """96 garment photos; captions name colour and category only (8 distinct), so they are learnable at a glance."""
    root = write_garment_set(tmp_path_factory.mktemp("critic-garments"), 96)
    rows = [json.loads(line) for line in (root / "captions.jsonl").read_text().splitlines()]
    for row in rows:
        row["caption"] = f"{row['baseColour']} {row['articleType'].lower()}"
    (root / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


@pytest.fixture(scope="module")
def trained(garments: Path, tmp_path_factory: pytest.TempPathFactory, text_cache_dir: Path) -> tuple[Config, Path]:
    config = _critic_config(garments, tmp_path_factory.mktemp("critic-run") / "critic", text_cache_dir)
    return config, train_critic(config, show_progress=False)


def test_trained_critic_ranks_true_captions_and_learns(trained: tuple[Config, Path], garments: Path) -> None:
    config, out_dir = trained
    metrics = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [m["loss"] for m in metrics if "loss" in m]
    assert len(losses) == 40 and np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5])
    critic, info = load_critic(out_dir)
    assert info["training"]["steps"] == 40 and set(info["attribute_vocab"]) == set(ATTRIBUTES)
    assert info["validation"]["val_r_precision"] > 0.5  # chance: 1/8

    source = open_source(garments, split="validation", val_fraction=0.25)
    records = [source[i] for i in range(len(source))]
    encoder = CaptionEncoder(config.text)
    image_emb = embed_images(critic, [r.image for r in records])
    text_emb = embed_captions(critic, encoder, [r.caption for r in records])
    mean, _ = r_precision(image_emb, text_emb, num_distractors=7, caption_ids=[r.caption for r in records])
    assert mean > 0.5
    matched, _ = critic_score(image_emb, text_emb)
    shuffled, _ = critic_score(image_emb, text_emb.roll(1, dims=0))
    assert matched > shuffled + 0.2
    accuracy = attribute_accuracy(critic, image_emb, [r.attributes for r in records])
    assert set(accuracy) == set(ATTRIBUTES) and accuracy["colour"][1] == len(records) and accuracy["colour"][0] > 0.25  # chance: 1/8


def test_save_load_round_trip_and_encoder_check(trained: tuple[Config, Path], garments: Path, text_cache_dir: Path) -> None:
    _, out_dir = trained
    critic, info = load_critic(out_dir)
    again, _ = load_critic(out_dir / "critic.json", encoder=info["text"]["identity"])
    images = [open_source(garments)[i].image for i in range(8)]
    assert torch.equal(embed_images(critic, images), embed_images(again, images))
    assert info["weights"]["sha256"] and info["critic"]["resolution"] == 32

    other = CaptionEncoder(load_config([], [f"text.cache_dir={text_cache_dir}", "text.max_length=32"]).text)
    with pytest.raises(EncoderMismatchError, match="critic trained with encoder minilm-.*-L64.*, got minilm-.*-L32"):
        load_critic(out_dir, encoder=other)
    with pytest.raises(EncoderMismatchError, match="critic trained with encoder"):
        embed_captions(critic, other, ["red dresses"])

    (out_dir.parent / "broken").mkdir()
    shutil.copy(out_dir / "critic.json", out_dir.parent / "broken" / "critic.json")
    (out_dir.parent / "broken" / "critic.safetensors").write_bytes(b"not weights")
    with pytest.raises(ValueError, match="checksum"):
        load_critic(out_dir.parent / "broken")


def test_resume_after_interruption_continues_and_matches(trained: tuple[Config, Path], garments: Path, tmp_path: Path,
                                                         text_cache_dir: Path) -> None:
    _, full_dir = trained
    interrupted = tmp_path / "interrupted"
    shutil.copytree(full_dir, interrupted)
    # A kill between the checkpoint at step 20 and the end: only step_000020 and the log up to step 27 remain.
    shutil.rmtree(interrupted / "checkpoints" / "step_000040")
    for name in ("critic.safetensors", "critic.json"):
        (interrupted / name).unlink()
    lines = (interrupted / "metrics.jsonl").read_text().splitlines()
    (interrupted / "metrics.jsonl").write_text("".join(line + "\n" for line in lines if json.loads(line)["step"] <= 27))

    train_critic(_critic_config(garments, interrupted, text_cache_dir), show_progress=False)
    records = [json.loads(line) for line in (interrupted / "metrics.jsonl").read_text().splitlines()]
    steps = [record["step"] for record in records if "loss" in record]
    assert steps == list(range(1, 41))
    assert [p.name for p in checkpoint_dirs(interrupted)] == ["step_000020", "step_000040"]
    resumed, info = load_critic(interrupted)
    assert info["training"]["steps"] == 40
    full, _ = load_critic(full_dir)
    images = [open_source(garments)[i].image for i in range(8)]
    assert torch.allclose(embed_images(resumed, images), embed_images(full, images), atol=1e-5)  # as if never interrupted

    with pytest.raises(ConfigError, match="critic.embed_dim"):
        train_critic(_critic_config(garments, interrupted, text_cache_dir, **{"critic.embed_dim": 16}), show_progress=False)


def test_the_critic_command_finishes_a_run_and_names_a_bad_setting(trained: tuple[Config, Path], garments: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m fashiongen.train critic CONFIG [key=value ...]` on a copy of a run whose newest checkpoint is its last
    step: no step is trained, the critic is saved again from it; a setting that does not fit the run is one error line."""
    from fashiongen.train.__main__ import main

    _, full_dir = trained
    copy = tmp_path / "copy"
    shutil.copytree(full_dir, copy)
    for name in ("critic.safetensors", "critic.json"):
        (copy / name).unlink()
    assert main(["critic", str(copy / "config.yaml"), f"critic.output_dir={copy}", "--quiet"]) == 0
    assert capsys.readouterr().out.strip() == str(copy)
    again, info = load_critic(copy)
    assert info["training"]["steps"] == 40
    images = [open_source(garments)[i].image for i in range(8)]
    assert torch.equal(embed_images(again, images), embed_images(load_critic(full_dir)[0], images))

    assert main(["critic", str(copy / "config.yaml"), f"critic.output_dir={copy}", "critic.embed_dim=16", "--quiet"]) == 2
    assert capsys.readouterr().err.startswith("error: critic.output_dir holds")


def test_garment_captions_are_eight_distinct() -> None:
    assert len({(colour, category) for colour, category, _, _ in GARMENTS}) == 8
