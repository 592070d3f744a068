"""The training loop's GPU path on a CUDA GPU (marker `cuda`; skipped without one): "auto" trains in bf16 with TF32
on and fused optimizers in every family; a step and its metric sums never wait for the GPU (torch's sync debug mode
raises on any wait); a compiled UNet meets its few caption lengths without reaching dynamo's recompile limit. The
same path, pinned on the CPU: tests/test_gpu_loop.py."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

from conftest import write_garment_set
from fashiongen.config import TextConfig
from fashiongen.text import CaptionEncoder
from fashiongen.train import prepare, train
from fashiongen.train.loader import compile_lengths
from fashiongen.train.trainers import trainer_class
from pipeline_helpers import export_tiny
from test_trainers import critic_config, family_overrides
from training_helpers import tiny_config

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
# The caption encoder: the bundled MiniLM, or on a lent GPU machine without its package the GPU kit's copy, which
# `python -m fashiongen.gpu run` names here (as for tests/test_cuda.py).
ENCODER = os.environ.get("FASHIONGEN_TEST_ENCODER", "minilm")


def _run(family: str, root: Path, source: Path, cache: Path, **extra: object):
    """A prepared tiny run of `family` with every precision setting left at its default ("auto")."""
    if family == "critic":
        config = critic_config(source, root, cache)
        config.text.encoder, config.critic.max_steps = ENCODER, 2
        return trainer_class("critic").build(config, None, False)
    overrides = family_overrides(family, root) if family != "student" else {
        "model.family": "student", "model.name": "unet-tiny", "distill.validation_steps": "[1]", "distill.grid_size": 10,
        "distill.lora_rank": 2, "train.init_from": export_tiny(root / "teacher", CaptionEncoder(TextConfig(encoder=ENCODER, cache_dir="")))}
    return prepare(tiny_config(source, root / "runs", cache, **{"text.encoder": ENCODER, "text.device": "cuda",
                                                              "train.max_steps": 2, **overrides, **extra}),
                   show_progress=False)


@pytest.mark.parametrize("family", ["diffusion", "gan", "upsampler", "student", "critic"])
def test_auto_trains_in_bf16_with_tf32_fused_optimizers_and_steps_that_never_wait(family: str, tmp_path: Path, garments16: Path,
                                                                                  text_cache_dir: Path) -> None:
    run = _run(family, tmp_path, garments16, text_cache_dir)
    section = run.config.critic if family == "critic" else run.config.train
    assert run.accelerator.mixed_precision == section.mixed_precision == "bf16"  # recorded as trained
    optimizers = [o for o in (getattr(run, "optimizer", None), getattr(run, "g_optimizer", None),
                              getattr(run, "d_optimizer", None)) if o is not None]
    assert optimizers and all(o.defaults.get("fused") for o in optimizers)
    train(run, show_progress=False)  # the whole loop; it also warms up (allocators, cuDNN, pinned blocks)
    assert torch.get_float32_matmul_precision() == "high"  # TF32
    sums, batches = run.new_sums(), iter(run.train_loader)
    batch = next(batches)
    for step in (1, 2):  # the first to fill the index caches of the sums
        if step == 2:
            torch.cuda.set_sync_debug_mode("error")
        try:
            sums.add(run.train_step(batch), step)
            if (averaged := run.averaged()) is not None:
                averaged[0].update(run.accelerator.unwrap_model(averaged[1]), step)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert all(math.isfinite(value) for value in sums.means(run.accelerator).values())  # read as at a log line


def test_a_compiled_unet_meets_its_caption_lengths_within_dynamos_recompile_limit(tmp_path: Path, text_cache_dir: Path) -> None:
    source = write_garment_set(tmp_path / "data", 16)  # captions of 5 to ~25 tokens: padded lengths 8 to 32
    rows = [json.loads(line) for line in (source / "captions.jsonl").read_text().splitlines()]
    for i, row in enumerate(rows):
        row["caption"] = " ".join([row["caption"]] + ["long"] * (19 * i // 15))
    (source / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    limit = len(compile_lengths(64))  # 3: fewer than the four lengths uncompiled batches would have
    settings = {name: value for name, value in (("recompile_limit", limit), ("cache_size_limit", limit),
                                                ("fail_on_recompile_limit_hit", True), ("fail_on_cache_limit_hit", True))
                if hasattr(torch._dynamo.config, name)}
    run = prepare(tiny_config(source, tmp_path / "runs", text_cache_dir, **{
        "text.encoder": ENCODER, "text.device": "cuda", "text.max_length": 64, "train.compile": True,
        "train.batch_size": 2, "train.max_steps": 24, "train.checkpoint_every": 24}), show_progress=False)
    torch._dynamo.reset()
    with torch._dynamo.config.patch(settings):  # past the limit: an error, not a silent fall back to eager
        train(run, show_progress=False)
    assert run.step == 24
