"""The training loop's GPU path, pinned on the CPU (issue 35): "auto" precision, per-step numbers that stay on the
device and are averaged at each log line, a NaN still named by its step when the loop checks only at log lines,
persistent loader workers that draw what no workers draw, and caption lengths padded to a few shapes for compile.
The same path on a CUDA GPU: tests/test_cuda_loop.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator

from conftest import write_garment_set
from fashiongen.config import ConfigError, load_config
from fashiongen.runs import MetricsLog, checkpoint_dirs
from fashiongen.train import TrainingDiverged, prepare, train
from fashiongen.train.data import TOKEN_MULTIPLE
from fashiongen.train.device import BF16_ON_CPU, bf16_on_cpu, fused, resolve_precision, with_resolved_precision
from fashiongen.train.engine import DeviceSums
from fashiongen.train.loader import Collate, compile_lengths
from fashiongen.train.schedule import check_due
from fashiongen.train.trainers import trainer_class
from test_trainers import critic_config, family_overrides
from training_helpers import tiny_config

CPU = torch.device("cpu")


def test_auto_precision_is_bf16_on_a_cuda_gpu_and_on_a_bf16_cpu_for_the_families_measured_to_gain(
        garments16: Path, tmp_path: Path) -> None:
    assert resolve_precision("auto", cuda_bf16=True, family="gan") == "bf16"
    assert resolve_precision("fp16", cuda_bf16=True) == "fp16" and resolve_precision("no", cuda_bf16=True) == "no"
    if not torch.cuda.is_available():  # a CPU: bf16 where it pays (benchmarks/mixed_precision.py) and the CPU has the kernels
        for family in ("diffusion", "gan", "upsampler", "critic"):
            assert resolve_precision("auto", cuda_bf16=False, family=family, cpu_bf16=True) == "bf16"
            assert resolve_precision("auto", cuda_bf16=False, family=family, cpu_bf16=False) == "no"
        for family in ("student",):  # faster, but its loss parts from fp32's
            assert resolve_precision("auto", cuda_bf16=False, family=family, cpu_bf16=True) == "no"
        assert resolve_precision("no", cuda_bf16=False, cpu_bf16=True) == "no"  # fp32 asked: fp32
    config = tiny_config(garments16, tmp_path, tmp_path)
    assert config.train.mixed_precision == config.critic.mixed_precision == "auto"  # the defaults
    on_gpu = with_resolved_precision(config, cuda_bf16=True)
    assert (on_gpu.train.mixed_precision, on_gpu.critic.mixed_precision) == ("bf16", "bf16")
    old_cpu = with_resolved_precision(config, cuda_bf16=False, cpu_bf16=False)
    assert (old_cpu.train.mixed_precision, old_cpu.critic.mixed_precision) == ("no", "no")
    here = with_resolved_precision(config)
    assert here.train.mixed_precision == ("bf16" if torch.cuda.is_available() or bf16_on_cpu() else "no")
    with pytest.raises(ConfigError, match=r"train.mixed_precision.*auto"):
        load_config([], ["train.mixed_precision=fast"])


def test_fused_optimizers_on_cuda_only() -> None:
    assert fused(torch.device("cuda")) is True and fused(torch.device("cuda"), wanted=False) is None
    assert fused(CPU) is None  # torch's default kernels: CPU training stays bit for bit what it was


def test_device_sums_average_each_number_over_the_steps_that_gave_it_and_keep_the_first_nan_step() -> None:
    sums = DeviceSums(CPU, ("loss", "d_loss", "lr"), checked=("loss",))
    sums.add({"loss": torch.tensor([1.0, 2.0, 3.0]), "lr": 0.5}, step=1)  # per-sample losses count each sample
    sums.add({"loss": torch.tensor([4.0, 5.0, 6.0]), "d_loss": torch.tensor(8.0), "lr": 1.5}, step=2)
    assert sums.means(Accelerator(cpu=True)) == {"loss": 3.5, "d_loss": 8.0, "lr": 1.0}  # d_loss: its one step
    sums.add({"loss": torch.tensor(1.0), "d_loss": torch.tensor(float("nan"))}, step=3)  # d_loss is not checked
    assert int(sums.first_nonfinite()) == 0
    sums.add({"loss": torch.tensor([1.0, float("inf")])}, step=4)
    sums.add({"loss": torch.tensor(float("nan"))}, step=5)
    assert int(sums.first_nonfinite()) == 4  # the first, kept after later ones
    with pytest.raises(KeyError, match="'g_loss' is not one of the trainer's logged numbers"):
        sums.add({"g_loss": torch.tensor(1.0)}, step=6)


def test_the_loop_reads_the_device_at_log_lines_validations_and_checkpoints_only(garments16: Path, tmp_path: Path) -> None:
    schedule = tiny_config(garments16, tmp_path, tmp_path, **{"train.log_every": 10, "train.checkpoint_every": 25,
                                                             "train.validate_every": 15, "train.max_steps": 52}).train
    assert [step for step in range(1, 53) if check_due(step, schedule)] == [10, 15, 20, 25, 30, 40, 45, 50, 52]


@pytest.mark.parametrize("family", ["gan", "upsampler", "student", "critic"])
def test_a_step_gives_its_numbers_as_device_tensors_and_a_cpu_run_records_its_precision(family: str, tmp_path: Path,
                                                                               garments16: Path, text_cache_dir: Path) -> None:
    if family == "critic":
        run = trainer_class("critic").build(critic_config(garments16, tmp_path, text_cache_dir), None, False)
        precision = run.config.critic.mixed_precision
    else:
        run = prepare(tiny_config(garments16, tmp_path / "runs", text_cache_dir, **family_overrides(family, tmp_path)),
                      show_progress=False)
        precision = run.config.train.mixed_precision
    expected = "bf16" if family in BF16_ON_CPU and bf16_on_cpu() else "no"
    assert precision == run.accelerator.mixed_precision == expected  # "auto" on a CPU, resolved and recorded
    numbers = run.train_step(next(iter(run.train_loader)))
    assert set(numbers) <= set(run.logged)
    on_device = {key: value for key, value in numbers.items() if key != "lr"}  # the student's lr is the host's own
    assert on_device and all(isinstance(v, torch.Tensor) and v.device == run.accelerator.device and v.dim() == 0
                             for v in on_device.values()), numbers
    optimizers = [o for o in (getattr(run, "optimizer", None), getattr(run, "g_optimizer", None),
                              getattr(run, "d_optimizer", None)) if o is not None]
    assert optimizers and all(not o.defaults.get("fused") for o in optimizers)


def _logged(run_dir: Path) -> list[dict]:
    return [r for r in MetricsLog(run_dir / "metrics.jsonl").read() if "images_per_s" in r]


@pytest.mark.parametrize("family", ["gan", "upsampler"])
def test_logged_numbers_are_the_steps_numbers_averaged(family: str, tmp_path: Path, garments16: Path,
                                                       text_cache_dir: Path) -> None:
    extra = {**family_overrides(family, tmp_path), "train.max_steps": 6, "train.checkpoint_every": 6}
    if family == "upsampler":
        extra["upsampler.adversarial_start"] = 2  # its discriminator's numbers start at step 3: within a log interval
    every_step = _logged(train(prepare(tiny_config(garments16, tmp_path / "a", text_cache_dir, **extra),
                                       show_progress=False), show_progress=False))
    every_third = _logged(train(prepare(tiny_config(garments16, tmp_path / "b", text_cache_dir, **extra,
                                                    **{"train.log_every": 3}), show_progress=False), show_progress=False))
    assert [r["step"] for r in every_third] == [3, 6]
    for line in every_third:
        steps = [r for r in every_step if line["step"] - 3 < r["step"] <= line["step"]]
        for key in trainer_class(family).logged:
            given = [r[key] for r in steps if key in r]
            assert (key in line) == bool(given), key
            if given:  # float64 sums of the same float32 numbers: the host's mean exactly
                assert line[key] == pytest.approx(sum(given) / len(given), rel=1e-12, abs=1e-12), key
    if family == "upsampler":
        assert "d_loss" not in every_step[1] and every_third[0]["d_loss"] == every_step[2]["d_loss"]


def test_a_nan_is_named_by_its_first_step_when_the_loop_checks_only_at_log_lines(tmp_path: Path, garments16: Path,
                                                                              text_cache_dir: Path) -> None:
    exploding = {**family_overrides("gan", tmp_path), "gan.collapse_window": 10, "train.max_steps": 40,
                 "train.checkpoint_every": 100, "gan.generator_lr": 1.0, "gan.discriminator_lr": 1.0,
                 "gan.ma_gp_weight": 1e6, "gan.ma_gp_every": 1, "gan.ma_gp_power": 12}
    named = []
    for log_every in (1, 7):
        config = tiny_config(garments16, tmp_path / str(log_every), text_cache_dir, **exploding, **{"train.log_every": log_every})
        with pytest.raises(TrainingDiverged, match=r"GAN loss became NaN/inf at step (\d+); no checkpoint") as raised:
            train(prepare(config, show_progress=False), show_progress=False)
        named.append(int(str(raised.value).split("at step ")[1].split(";")[0]))
        run_dir = next((tmp_path / str(log_every)).glob("001-*"))
        assert checkpoint_dirs(run_dir) == []  # no check point passed with the NaN: nothing saved it
    assert named[0] == named[1]  # with log_every 7 the check that finds it may come steps later: the same step


def test_persistent_workers_draw_what_the_main_process_draws_in_every_epoch(tmp_path: Path, garments16: Path,
                                                                           text_cache_dir: Path) -> None:
    batches, pids = {}, []
    for workers in (0, 2):
        run = prepare(tiny_config(garments16, tmp_path / str(workers), text_cache_dir, **{"train.num_workers": workers}),
                      show_progress=False)
        assert run.train_loader.persistent_workers == bool(workers)
        batches[workers] = []
        for epoch in range(3):  # epochs reshuffle and redraw noise: the workers must follow the epoch
            run.train_loader.set_epoch(epoch)
            run.train_examples.set_epoch(epoch)
            batches[workers] += list(run.train_loader)
            if workers:
                iterator = run.train_loader.base_dataloader._iterator  # Accelerate's loader wraps torch's, which keeps it
                pids.append(sorted(w.pid for w in iterator._workers))
    assert len(pids) == 3 and pids[0] == pids[1] == pids[2]  # the same worker processes in every epoch
    assert len(batches[0]) == len(batches[2]) == 6
    for alone, pooled in zip(batches[0], batches[2]):
        for key in ("index", "pixel_values", "noise", "timestep", "text_states", "attribute_ids"):
            assert torch.equal(alone[key], pooled[key]), key


def test_compiling_pads_captions_to_a_few_fixed_lengths(tmp_path: Path, text_cache_dir: Path) -> None:
    assert compile_lengths(64) == (16, 32, 64) and compile_lengths(128) == (16, 32, 64, 128)
    assert compile_lengths(77) == (16, 32, 64, 80) and len(compile_lengths(1024)) <= 8  # dynamo's recompile limit
    states = [{"text_states": torch.ones(n, 4), "text_pooled": torch.ones(4), "caption": "x", "index": i,
               "pixel_values": torch.zeros(3, 2, 2)} for i, n in enumerate((3, 11))]
    padded = Collate((16, 32))(states)
    assert padded["text_states"].shape == (2, 16, 4) and padded["text_mask"].sum(1).tolist() == [3, 11]
    assert padded["text_states"][:, 11:].abs().sum() == 0
    source = write_garment_set(tmp_path / "data", 16)  # captions of 1 to 46 words: many padded lengths
    rows = [json.loads(line) for line in (source / "captions.jsonl").read_text().splitlines()]
    for i, row in enumerate(rows):
        row["caption"] = " ".join([row["caption"]] + ["long"] * (3 * i))
    (source / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    shapes = {}
    for compiled in (False, True):
        run = prepare(tiny_config(source, tmp_path / str(compiled), text_cache_dir, **{
            "train.compile": compiled, "train.batch_size": 2, "text.max_length": 64}), show_progress=False)
        shapes[compiled] = set()
        for epoch in range(3):
            run.train_loader.set_epoch(epoch)
            run.train_examples.set_epoch(epoch)
            shapes[compiled] |= {batch["text_states"].shape[1:] for batch in run.train_loader}
    lengths = {shape[0] for shape in shapes[False]}
    assert len(lengths) >= 4 and all(n % TOKEN_MULTIPLE == 0 for n in lengths)  # one graph each, if compiled
    assert {shape[0] for shape in shapes[True]} <= set(compile_lengths(64)) and len(shapes[True]) <= 3
