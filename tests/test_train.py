"""Training pieces (EMA, schedule, sampler, examples, checkpoints, export) and short in-process runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn
from training_helpers import same_weights, tiny_config, weights

from fashiongen.config import ConfigError, TrainConfig
from fashiongen.data import FashionDataset
from fashiongen.pipeline import FashionGenPipeline
from fashiongen.text import CaptionEncoder
from fashiongen.train import (
    EMA,
    MetricsLog,
    ModelFileError,
    TrainingDiverged,
    checkpoint_dirs,
    create_run_dir,
    ema_decay,
    lr_at,
    prepare,
    resolve_resume,
    resolve_training_config,
    train,
)
from fashiongen.families import load_generator
from fashiongen.train.data import DiffusionExamples, EpochSampler, attribute_ids, attribute_vocabulary, collate_examples



def load_exported(path: Path) -> tuple[torch.nn.Module, dict]:
    """An export's network and its model.json as written (what the tests below check)."""
    generator = load_generator(path)
    return generator.model, generator.info.raw


load_checkpoint_model = load_exported  # a checkpoint loads through the same call, with the model.json an export would have

def test_ema_decay_warms_up_and_caps() -> None:
    assert ema_decay(0, 0.999, 0.75) == 0.0
    assert ema_decay(1, 0.999, 0.75) == pytest.approx(1 - 2 ** -0.75)
    assert ema_decay(10**9, 0.999, 0.75) == 0.999
    values = [ema_decay(s, 0.9999, 0.75) for s in range(1, 2000)]
    assert all(a <= b for a, b in zip(values, values[1:]))


def test_ema_update_is_the_moving_average() -> None:
    model = nn.Linear(3, 2)
    ema = EMA(model, max_decay=0.5, power=1.0)
    start = {k: v.clone() for k, v in ema.module.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    decay = ema.update(model, step=10)  # 1 - 11**-1 > 0.5, so capped
    assert decay == 0.5
    for name, value in ema.module.state_dict().items():
        expected = 0.5 * start[name] + 0.5 * (start[name] + 1.0)
        assert torch.allclose(value, expected)
    ema.update(model, step=0)  # decay 0: the EMA becomes the model
    assert all(torch.equal(a, b) for a, b in zip(ema.module.parameters(), model.parameters()))
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_lr_warmup_then_cosine_to_floor() -> None:
    config = TrainConfig(learning_rate=1.0, warmup_steps=10, max_steps=110, min_lr_ratio=0.1)
    assert lr_at(0, config) == pytest.approx(0.1)
    assert lr_at(9, config) == pytest.approx(1.0)
    assert lr_at(60, config) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_at(110, config) == pytest.approx(0.1)
    constant = TrainConfig(learning_rate=1.0, warmup_steps=0, lr_schedule="constant")
    assert lr_at(0, constant) == lr_at(5000, constant) == 1.0


def test_epoch_sampler_is_seeded_full_batches_and_checks_size() -> None:
    sampler = EpochSampler(size=20, seed=3, multiple=8)
    first = list(sampler)
    assert len(first) == 16 and len(set(first)) == 16 and first == list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != first
    with pytest.raises(ConfigError, match=r"train.batch_size .* = 32 is larger than the dataset \(20 examples\)"):
        EpochSampler(size=20, seed=0, multiple=32)


def test_attribute_vocabulary_and_ids(garments16: Path) -> None:
    dataset = FashionDataset.from_config(tiny_config(garments16, Path("unused"), Path("unused")).data)
    vocab = attribute_vocabulary(dataset.source, ["colour", "gender"])
    assert vocab["gender"] == ["Men", "Women"] and "Navy Blue" in vocab["colour"]
    assert attribute_ids({"colour": "Navy Blue", "gender": "Women"}, vocab) == [vocab["colour"].index("Navy Blue") + 1, 2]
    assert attribute_ids({"colour": "Mauve"}, vocab) == [0, 0]  # unknown and missing values are 'none'
    with pytest.raises(ConfigError, match=r"model.attributes: 'fabric' has no values .* attributes there: .*colour"):
        attribute_vocabulary(dataset.source, ["fabric"])


def _examples(source: Path, cache_dir: Path, **options: object) -> DiffusionExamples:
    config = tiny_config(source, Path("unused"), cache_dir, **{"model.attributes": "[colour]"})
    dataset = FashionDataset.from_config(config.data)
    encoder = CaptionEncoder(config.text)
    from fashiongen.train.data import precompute_captions

    precompute_captions(encoder, [dataset], show_progress=False)
    vocab = attribute_vocabulary(dataset.source, ["colour"])
    return DiffusionExamples(dataset, encoder.cache, vocab, seed=0, num_train_timesteps=1000, **options)


def test_examples_draw_their_randomness_from_seed_epoch_and_index(garments16: Path, text_cache_dir: Path) -> None:
    examples = _examples(garments16, text_cache_dir, caption_dropout_prob=0.5, attribute_dropout_prob=0.5)
    first, again = examples[3], examples[3]
    assert torch.equal(first["noise"], again["noise"]) and first["timestep"] == again["timestep"]
    assert not torch.equal(examples[3]["noise"], examples[4]["noise"])
    examples.set_epoch(1)
    assert not torch.equal(examples[3]["noise"], first["noise"])
    items = [examples[i] for i in range(16)]
    dropped = [item for item in items if item["caption"] == ""]
    assert 0 < len(dropped) < 16  # p = 0.5
    assert all(int(item["attribute_ids"].sum()) == 0 for item in dropped)  # no caption, no attributes either
    batch = collate_examples(items[:4])
    longest = -(-max(item["text_states"].shape[0] for item in items[:4]) // 8) * 8  # padded to a multiple of 8
    assert batch["text_states"].shape == (4, longest, 384) and batch["text_mask"].sum(1).tolist() == [
        item["text_states"].shape[0] for item in items[:4]]
    assert batch["noise"].shape == (4, 3, 32, 32) and batch["attribute_ids"].shape == (4, 1)


def test_super_resolution_examples_carry_the_low_res_image(garments16: Path, text_cache_dir: Path) -> None:
    item = _examples(garments16, text_cache_dir, low_res_resolution=8, low_res_noise_max=0.0)[0]
    assert item["low_res"].shape == item["pixel_values"].shape
    assert (item["low_res"] - item["pixel_values"]).abs().mean() < 0.3  # a blurred copy, not noise


def test_run_directories_are_numbered(tmp_path: Path) -> None:
    assert create_run_dir(tmp_path, "small64").name == "001-small64"
    (tmp_path / "007-other").mkdir()
    assert create_run_dir(tmp_path, "my run!").name == "008-my-run"


def test_metrics_log_drops_steps_a_resume_repeats(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path / "metrics.jsonl")
    for step in (1, 2, 3, 4):
        log.write({"step": step, "loss": 1.0 / step})
    log.truncate_after(2)
    assert [r["step"] for r in log.read()] == [1, 2]


@pytest.mark.slow  # among the slowest of the fast tier (shipped models or a training run): full run only
def test_overfitting_one_batch_lowers_the_loss(tmp_path: Path, text_cache_dir: Path) -> None:
    source = tmp_path / "eight"
    from conftest import write_garment_set

    write_garment_set(source, 8)
    config = tiny_config(source, tmp_path / "runs", text_cache_dir, **{
        "train.max_steps": 50, "train.checkpoint_every": 50, "train.lr_schedule": "constant", "train.learning_rate": 3e-3,
        "train.caption_dropout_prob": 0.0, "train.snr_gamma": 0.0})
    run_dir = train(prepare(config, show_progress=False), show_progress=False)
    losses = [r["loss"] for r in MetricsLog(run_dir / "metrics.jsonl").read() if "loss" in r]
    assert len(losses) == 50
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:5]) / 5, losses
    assert (run_dir / "samples" / "step_000050.png").is_file()
    assert (run_dir / "curves.png").stat().st_size > 10_000
    assert (run_dir / "config.yaml").is_file()
    record = MetricsLog(run_dir / "metrics.jsonl").read()[0]
    assert {"step", "loss", "lr", "grad_norm", "images_per_s", "memory_mb"} <= record.keys()


def test_resume_continues_bitwise(tmp_path: Path, garments16: Path, text_cache_dir: Path) -> None:
    straight = tiny_config(garments16, tmp_path / "a", text_cache_dir, **{"train.max_steps": 8})
    reference = train(prepare(straight, show_progress=False), show_progress=False)
    # The interrupted run: same settings, stopped at its step-4 checkpoint (as after a kill), then resumed.
    interrupted = tiny_config(garments16, tmp_path / "b", text_cache_dir, **{"train.max_steps": 8})
    run = prepare(interrupted, show_progress=False)
    train(run, show_progress=False)
    for later in checkpoint_dirs(run.run_dir)[1:]:
        import shutil

        shutil.rmtree(later)  # as if killed right after step 4 was saved
    (run.run_dir / "export").rename(run.run_dir / "export-discarded")
    config, checkpoint = resolve_training_config([], [f"train.output_dir={tmp_path / 'b'}", f"name={interrupted.name}"], "latest")
    assert checkpoint is not None and checkpoint.name == "step_000004"
    resumed = train(prepare(config, resume=checkpoint, show_progress=False), show_progress=False)
    assert resumed == run.run_dir
    for name in ("model.safetensors", "ema.safetensors"):
        assert same_weights(weights(reference / "checkpoints" / "step_000008" / name),
                            weights(resumed / "checkpoints" / "step_000008" / name))
    steps = [r["step"] for r in MetricsLog(resumed / "metrics.jsonl").read() if "loss" in r]
    assert steps == list(range(1, 9))  # the repeated steps 5-8 are logged once


def test_same_result_with_gradient_accumulation(tmp_path: Path, garments16: Path, text_cache_dir: Path) -> None:
    """Per-example randomness: 1 x 8 equals 2 micro-batches of 4 up to float32 rounding (in fp32: bf16's rounding of
    activations depends on the batch shape's kernel choice and would hide a real difference)."""
    fp32 = {"train.max_steps": 4, "train.mixed_precision": "no"}
    one = train(prepare(tiny_config(garments16, tmp_path / "a", text_cache_dir, **fp32), show_progress=False),
                show_progress=False)
    two = train(prepare(tiny_config(garments16, tmp_path / "b", text_cache_dir, **{
        **fp32, "train.batch_size": 4, "train.gradient_accumulation_steps": 2}), show_progress=False), show_progress=False)
    a, b = weights(one / "export" / "model.safetensors"), weights(two / "export" / "model.safetensors")
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-4


def test_partial_checkpoints_are_ignored(tmp_path: Path, garments16: Path, text_cache_dir: Path) -> None:
    run_dir = train(prepare(tiny_config(garments16, tmp_path, text_cache_dir, **{"train.max_steps": 4}), show_progress=False),
                    show_progress=False)
    (run_dir / "checkpoints" / ".tmp-step_000008").mkdir()  # killed while saving
    (run_dir / "checkpoints" / ".tmp-step_000008" / "model.safetensors").write_bytes(b"half a file")
    (run_dir / "checkpoints" / "step_000009").mkdir()  # no state.json: never completed
    assert resolve_resume("latest", tmp_path, "default").name == "step_000004"
    assert [p.name for p in checkpoint_dirs(run_dir)] == ["step_000004"]
    with pytest.raises(ConfigError, match="not a checkpoint directory"):
        resolve_resume(str(run_dir / "checkpoints" / "step_000009"), tmp_path, "default")
    with pytest.raises(ConfigError, match="no complete checkpoint in any run named 'other'"):
        resolve_resume("latest", tmp_path, "other")


def test_keep_last_k_checkpoints(tmp_path: Path, garments16: Path, text_cache_dir: Path) -> None:
    run_dir = train(prepare(tiny_config(garments16, tmp_path, text_cache_dir, **{
        "train.max_steps": 10, "train.checkpoint_every": 2, "train.keep_checkpoints": 2}), show_progress=False), show_progress=False)
    assert [p.name for p in checkpoint_dirs(run_dir)] == ["step_000008", "step_000010"]
    state = json.loads((run_dir / "checkpoints" / "step_000010" / "state.json").read_text())
    assert state["step"] == 10 and state["images_seen"] == 80


def test_resume_refuses_a_different_model(tmp_path: Path, garments16: Path, text_cache_dir: Path) -> None:
    run_dir = train(prepare(tiny_config(garments16, tmp_path, text_cache_dir, **{"train.max_steps": 2}), show_progress=False),
                    show_progress=False)
    with pytest.raises(ConfigError, match=r"model.pooled_text: checkpoint has True, now False"):
        resolve_training_config([], ["model.pooled_text=false"], str(run_dir))
    config, _ = resolve_training_config([], ["train.max_steps=3"], str(run_dir))  # training longer is fine
    assert config.train.max_steps == 3


def test_divergence_stops_with_the_step_and_keeps_the_checkpoint(tmp_path: Path, garments16: Path, text_cache_dir: Path) -> None:
    config = tiny_config(garments16, tmp_path, text_cache_dir, **{
        "train.max_steps": 40, "train.checkpoint_every": 1, "train.keep_checkpoints": 50, "train.warmup_steps": 0,
        "train.learning_rate": 1e12, "train.max_grad_norm": 0})
    with pytest.raises(TrainingDiverged, match=r"loss became NaN/inf at step (\d+); the last checkpoint before it is .*step_"):
        train(prepare(config, show_progress=False), show_progress=False)
    run_dir = next(tmp_path.glob("001-*"))
    last = checkpoint_dirs(run_dir)[-1]
    assert all(bool(torch.isfinite(v).all()) for v in weights(last / "ema.safetensors").values())


@pytest.mark.parametrize("override, key", [
    ("model.name=unet-huge", "model.name: unknown model 'unet-huge'"),
    ("data.resolution=36", "data.resolution: resolution 36 is not divisible by 2"),
    ("train.batch_size=64", "train.batch_size x processes x gradient_accumulation_steps = 64 is larger than the dataset"),
    ("model.low_res_resolution=16", "model.low_res_resolution: unet-tiny is not a super-resolution model"),
    ("model.attributes=[fabric]", "model.attributes: 'fabric' has no values"),
])
def test_bad_settings_fail_before_training(tmp_path: Path, garments16: Path, text_cache_dir: Path, override: str, key: str) -> None:
    config = tiny_config(garments16, tmp_path, text_cache_dir, **dict([override.split("=", 1)]))
    if override.startswith("data.resolution"):
        config.model.name = "unet-small"
        key = "data.resolution: resolution 36 is not divisible by 8"
    with pytest.raises(ConfigError, match=key.replace("(", r"\(").replace(")", r"\)")):
        prepare(config, show_progress=False)
    assert not list(tmp_path.glob("0*"))  # nothing created


def test_export_loads_back_and_detects_corruption(tmp_path: Path, garments16: Path, text_cache_dir: Path) -> None:
    config = tiny_config(garments16, tmp_path, text_cache_dir, **{"train.max_steps": 2, "model.attributes": "[colour, gender]"})
    run = prepare(config, show_progress=False)
    run_dir = train(run, show_progress=False)
    model, info = load_exported(run_dir / "export")
    assert info["text"]["identity"] == run.encoder.identity and info["training"]["steps"] == 2
    assert info["model"]["attribute_vocab"]["gender"] == ["Men", "Women"]
    assert info["diffusion"]["prediction_type"] == "v_prediction"
    for name, value in model.state_dict().items():
        assert torch.equal(value, run.ema.module.state_dict()[name])
    path = run_dir / "export" / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="checksum does not match"):
        load_exported(run_dir / "export")
    with pytest.raises(ModelFileError, match="is not a FashionGen model"):
        load_exported(tmp_path)  # a folder with neither model.json, a checkpoint nor a run's


@pytest.mark.parametrize("model_overrides", [
    {"model.prediction_type": "epsilon", "model.beta_schedule": "linear"},
    {"model.prediction_type": "v_prediction", "model.zero_terminal_snr": True, "train.validation_sampler": "dpm++"},
    {"model.name": "unet-tiny-sr", "model.low_res_resolution": 16, "model.attributes": "[colour]",
     "train.validation_sampler": "euler"},
])
def test_every_model_kind_trains_validates_and_exports(tmp_path: Path, garments16: Path, text_cache_dir: Path,
                                                      model_overrides: dict) -> None:
    config = tiny_config(garments16, tmp_path, text_cache_dir, **{"train.max_steps": 2, "data.val_fraction": 0.25,
                                                                  "train.validation_batches": 1, **model_overrides})
    run_dir = train(prepare(config, show_progress=False), show_progress=False)
    records = MetricsLog(run_dir / "metrics.jsonl").read()
    assert math.isfinite(records[-1]["val_loss"])
    assert (run_dir / "samples" / "step_000002.png").is_file()
    model, info = load_exported(run_dir / "export")
    assert model.super_resolution == (config.model.name == "unet-tiny-sr")


def test_export_cli_writes_half_precision(tmp_path: Path, garments16: Path, text_cache_dir: Path) -> None:
    from fashiongen.train.__main__ import main

    run_dir = train(prepare(tiny_config(garments16, tmp_path, text_cache_dir, **{"train.max_steps": 2}), show_progress=False),
                    show_progress=False)
    assert main(["export", str(run_dir), str(tmp_path / "fp16"), "--dtype", "float16"]) == 0
    model, info = load_exported(tmp_path / "fp16")
    full, _ = load_exported(run_dir / "export")
    assert info["weights"]["dtype"] == "float16" and info["training"]["steps"] == 2
    assert (tmp_path / "fp16" / "model.safetensors").stat().st_size < 0.6 * (run_dir / "export" / "model.safetensors").stat().st_size
    for name, value in model.state_dict().items():
        assert torch.allclose(value, full.state_dict()[name], atol=1e-2, rtol=1e-2)


@pytest.mark.skipif(__import__("importlib").util.find_spec("tensorboard") is not None, reason="tensorboard is installed")
def test_tensorboard_without_the_package_is_a_config_error(tmp_path: Path, garments16: Path, text_cache_dir: Path) -> None:
    config = tiny_config(garments16, tmp_path, text_cache_dir, **{"train.tensorboard": True})
    with pytest.raises(ConfigError, match=r"train.tensorboard: TensorBoard is not installed; `pip install tensorboard`"):
        prepare(config, show_progress=False)


def test_run_facts_count_training_time_but_not_the_pause_before_a_resume() -> None:
    from fashiongen.runs import hardware_name, run_facts

    records = [{"step": 10, "loss": 0.5, "time": 1000.0}, {"step": 20, "loss": 0.4, "time": 1060.0},
               {"step": 30, "loss": 0.3, "time": 5000.0},  # stopped, resumed an hour later
               {"step": 40, "loss": 0.2, "time": 5030.0}, {"val_loss": 0.1, "step": 40, "time": 5031.0},
               {"step": 50, "loss": 0.1, "time": 5100.0}]
    facts = run_facts(records, up_to_step=40)
    assert facts == {"final_loss": 0.2, "wall_time_s": 90.0, "wall_time": "0 h 1 min"}
    assert run_facts([], 10) == {}
    assert "cores" in hardware_name("cpu")


def test_init_from_starts_a_new_run_from_a_models_weights(tmp_path: Path, garments16: Path, text_cache_dir: Path) -> None:
    """train.init_from: fine-tuning, or continuing a published model whose optimizer state is gone."""
    attributes = {"model.attributes": "[colour, gender]"}
    parent = train(prepare(tiny_config(garments16, tmp_path / "a", text_cache_dir, **{"train.max_steps": 2, **attributes}),
                           show_progress=False), show_progress=False)
    start = weights(parent / "export" / "model.safetensors")
    config = tiny_config(garments16, tmp_path / "b", text_cache_dir,
                         **{"train.max_steps": 3, "train.init_from": parent / "export", **attributes})
    run = prepare(config, show_progress=False)
    assert same_weights(start, run.model.state_dict()) and same_weights(start, run.ema.module.state_dict())
    assert run.vocab == run.ema.module.attribute_vocab == load_exported(parent / "export")[0].attribute_vocab
    child = train(run, show_progress=False)
    assert not same_weights(start, weights(child / "export" / "model.safetensors"))  # it did train
    _, info = load_exported(child / "export")
    origin = info["training"]["initialised_from"]
    assert origin["path"] == str(parent / "export") and origin["steps"] == 2 and origin["images_seen"] == 16
    assert origin["sha256"] == load_exported(parent / "export")[1]["weights"]["sha256"]
    assert info["training"]["steps"] == 3
    card = FashionGenPipeline.from_pretrained(child / "export", cache_dir=str(text_cache_dir)).model_card()
    assert f"initialised from `{parent / 'export'}` (sha256 {origin['sha256'][:16]}: steps 2, images_seen 16" in card
    assert "| 5 (2 + 3) | 40 (16 + 24) |" in card  # the stages table counts what the start model had seen
    # A resumed child still knows where it started; its checkpoints load with the same facts.
    assert load_checkpoint_model(checkpoint_dirs(child)[-1])[1]["training"]["initialised_from"] == origin
    resumed, _ = resolve_training_config([], ["train.max_steps=4"], str(child))
    assert train(prepare(resumed, resume=checkpoint_dirs(child)[-1], show_progress=False), show_progress=False) == child
    assert load_exported(child / "export")[1]["training"]["initialised_from"] == origin
    # A third run started from the child: the card walks the whole chain.
    grandchild = train(prepare(tiny_config(garments16, tmp_path / "c", text_cache_dir,
                                           **{"train.max_steps": 1, "train.init_from": child / "export", **attributes}),
                               show_progress=False), show_progress=False)
    card = FashionGenPipeline.from_pretrained(grandchild / "export", cache_dir=str(text_cache_dir)).model_card()
    assert "| 7 (2 + 4 + 1) | 56 (16 + 32 + 8) |" in card
    assert f"- which was itself initialised from `{parent / 'export'}` (sha256 {origin['sha256'][:16]}: steps 2" in card


@pytest.mark.parametrize("override, message", [
    ({"model.pooled_text": "false"}, r"model.pooled_text: init_from has True, now False"),
    ({"model.attributes": "[colour]"}, r"model.attributes: init_from has \['colour', 'gender'\], now \['colour'\]"),
    ({"model.prediction_type": "epsilon"}, r"diffusion.prediction_type: init_from has 'v_prediction', now 'epsilon'"),
])
def test_init_from_refuses_a_model_that_does_not_fit(tmp_path: Path, garments16: Path, text_cache_dir: Path,
                                                     override: dict, message: str) -> None:
    attributes = {"model.attributes": "[colour, gender]"}
    parent = train(prepare(tiny_config(garments16, tmp_path / "a", text_cache_dir, **{"train.max_steps": 1, **attributes}),
                           show_progress=False), show_progress=False)
    config = tiny_config(garments16, tmp_path / "b", text_cache_dir, **{"train.init_from": parent, **attributes, **override})
    with pytest.raises(ConfigError, match=message):
        prepare(config, show_progress=False)
    assert not (tmp_path / "b").exists()  # refused before a run directory was made
    with pytest.raises(ConfigError, match=r"train.init_from: model path .*missing does not exist"):
        prepare(tiny_config(garments16, tmp_path / "b", text_cache_dir, **{"train.init_from": tmp_path / "missing"}),
                show_progress=False)
