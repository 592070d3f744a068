"""On a CUDA GPU (marker `cuda`; skipped without one, tests/conftest.py): a bf16 training step of every family through
the one engine, a resumed run against an uninterrupted one, sampling against the CPU's, the kit's resident batches,
and two training processes sharing one GPU. `python -m fashiongen.gpu run` runs these first on a lent machine."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from fashiongen.config import TextConfig
from fashiongen.runs import checkpoint_dirs
from fashiongen.text import CaptionEncoder
from fashiongen.train import TRAINERS, prepare, train
from fashiongen.train.trainers import trainer_class
from pipeline_helpers import export_tiny
from test_trainers import critic_config, family_overrides
from training_helpers import tiny_config, tiny_overrides

pytestmark = pytest.mark.cuda
REPO = Path(__file__).resolve().parents[1]
# The caption encoder: the bundled MiniLM, or where its package is missing (a lent GPU machine) the GPU kit's copy cut
# to the bundled photos' tokens, which `python -m fashiongen.gpu run` names here. Any captions encode with it.
ENCODER = os.environ.get("FASHIONGEN_TEST_ENCODER", "minilm")
# bf16 steps on a GPU are not bitwise repeatable (atomics in the backward of convolutions): a resumed run's weights
# are compared with the uninterrupted run's to this absolute tolerance, not for equality as on CPU.
RESUME_TOLERANCE = 2e-2
# Sampling in float32 with TF32 off: kernels differ from the CPU's, so the images differ by rounding. On uint8 pixels:
SAMPLING_MAX_LEVELS, SAMPLING_MEAN_LEVELS = 8, 0.5


def cuda_config(source: Path, root: Path, cache: Path, **extra: object):
    return tiny_config(source, root / "runs", cache, **{"train.mixed_precision": "bf16", "text.device": "cuda",
                                                         "text.encoder": ENCODER, **extra})


def tiny_teacher(out: Path) -> Path:
    return export_tiny(out, CaptionEncoder(TextConfig(encoder=ENCODER, cache_dir="")))


def overrides(family: str, root: Path) -> dict[str, object]:
    """test_trainers' one-step settings of `family`, with a teacher of this encoder for the student."""
    if family == "student":
        return {"model.family": "student", "model.name": "unet-tiny", "train.init_from": tiny_teacher(root / "teacher"),
                "distill.validation_steps": "[1]", "distill.grid_size": 10, "distill.lora_rank": 2}
    return family_overrides(family, root)


@pytest.mark.parametrize("family", sorted(TRAINERS))
def test_a_bf16_step_of_every_family_on_cuda(family: str, tmp_path: Path, garments16: Path, text_cache_dir: Path) -> None:
    if family == "critic":
        config = critic_config(garments16, tmp_path, text_cache_dir)
        config.critic.mixed_precision = "bf16"
        config.text.encoder = ENCODER
        run = trainer_class("critic").build(config, None, False)
    else:
        config = cuda_config(garments16, tmp_path, text_cache_dir, **{
            "train.max_steps": 2, "train.checkpoint_every": 1, **overrides(family, tmp_path)})
        run = prepare(config, show_progress=False)
    assert run.accelerator.device.type == "cuda" and run.accelerator.mixed_precision == "bf16"
    run_dir = train(run, show_progress=False)
    assert run.step >= 1 and checkpoint_dirs(run_dir)
    exported = run_dir / ("critic.safetensors" if family == "critic" else "export/model.safetensors")
    assert all(torch.isfinite(t.float()).all() for t in load_file(exported).values())


def test_a_resumed_cuda_run_ends_near_the_uninterrupted_one(tmp_path: Path, garments16: Path, text_cache_dir: Path) -> None:
    settings = {"train.max_steps": 6, "train.checkpoint_every": 3, "train.keep_checkpoints": 3}
    whole = train(prepare(cuda_config(garments16, tmp_path / "a", text_cache_dir, **settings), show_progress=False),
                  show_progress=False)
    copy = tmp_path / "b" / whole.name
    shutil.copytree(whole, copy)  # the same run, resumed from its step-3 checkpoint
    resumed = prepare(cuda_config(garments16, tmp_path / "b", text_cache_dir, **settings),
                      resume=copy / "checkpoints" / "step_000003", show_progress=False)
    assert resumed.step == 3
    train(resumed, show_progress=False)
    a, b = load_file(whole / "export/model.safetensors"), load_file(copy / "export/model.safetensors")
    assert a.keys() == b.keys()
    assert max(float((a[k].float() - b[k].float()).abs().max()) for k in a) < RESUME_TOLERANCE


def test_sampling_on_cuda_matches_the_cpu(tmp_path: Path) -> None:
    from fashiongen.pipeline import FashionGenPipeline

    model = tiny_teacher(tmp_path / "model")
    previous = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        images = {device: FashionGenPipeline.from_pretrained(model, device=device)(
            ["red dress", "white sneakers"], seed=0, num_inference_steps=4) for device in ("cpu", "cuda")}
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = previous
    for cpu, gpu in zip(images["cpu"], images["cuda"]):
        difference = np.abs(np.asarray(cpu, dtype=np.int16) - np.asarray(gpu, dtype=np.int16))
        assert difference.max() <= SAMPLING_MAX_LEVELS and difference.mean() <= SAMPLING_MEAN_LEVELS


def test_the_kits_resident_batches_train_on_cuda(tmp_path: Path, garments16: Path, text_cache_dir: Path) -> None:
    from fashiongen.gpu.feed import ResidentBatches

    run = prepare(cuda_config(garments16, tmp_path, text_cache_dir, **{"train.max_steps": 4}), show_progress=False)
    feed = ResidentBatches.of(run)
    batch = next(iter(feed))
    assert feed.photos.device.type == "cuda" and feed.photos.dtype == torch.uint8
    assert batch["pixel_values"].shape == (8, 3, 32, 32) and batch["text_states"].shape[:2] == batch["text_mask"].shape
    assert -1.0 <= float(batch["pixel_values"].min()) and float(batch["pixel_values"].max()) <= 1.0
    run.train_loader = feed
    train(run, show_progress=False)
    assert run.step == 4


def test_two_training_processes_share_one_gpu(tmp_path: Path, garments16: Path, text_cache_dir: Path) -> None:
    """Two runs at once on one GPU (two researchers, or a sweep): both finish with their exports."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    commands = [[sys.executable, str(REPO / "train.py"), "--quiet", *tiny_overrides(
        garments16, tmp_path / name, text_cache_dir, **{"train.mixed_precision": "bf16", "train.max_steps": 4,
                                                          "text.device": "cuda", "text.encoder": ENCODER})] for name in ("a", "b")]
    processes = [subprocess.Popen(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for c in commands]
    outputs = [p.communicate(timeout=600)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], "\n".join(o[-1500:] for o in outputs)
    assert all(len(list((tmp_path / name).glob("*/export/model.json"))) == 1 for name in ("a", "b"))
