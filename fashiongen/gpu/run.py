"""`run`, on the lent machine, in one call: the CUDA tests, the throughput benchmarks (bench.py), then training the
kit's model for the minutes left on data resident on the device (feed.py), with the weights written to --out in
pieces about once a minute (a call killed at its limit still returns the last ones) and results.json rewritten after
every phase.

    python -m fashiongen.gpu run --minutes 9 --out $OUT     # results.json, run.log, model.json, pieces.json, pieces
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import Config, load_config
from ..train import TrainingStopped, prepare, train
from ..train.diffusion import TrainingRun, export
from . import bench
from .encoder import unpack_weights
from .feed import ResidentBatches
from .photos import rebuild
from .pieces import PIECE_BYTES, PiecesError, write_pieces
from .prepare import read_kit

logger = logging.getLogger("fashiongen.gpu")
RESULTS, LOG = "results.json", "run.log"


@dataclass
class Options:
    """What `run` was asked for (the command line's options)."""

    kit: Path
    out: Path
    work: Path
    minutes: float = 9.0
    device: str = "cuda"
    batch_size: int = 64
    bench_models: tuple[str, ...] = ("unet-compact", "unet-small")
    bench_steps: int = 100
    compile: bool = True
    tests: bool = True
    overrides: list[str] = field(default_factory=list)


@dataclass
class KitRun(TrainingRun):
    """The diffusion trainer, whose checkpoints also send the EMA weights (float16) to `out` in pieces."""

    out: Path = Path(".")
    run_id: str = ""

    @classmethod
    def of(cls, run: TrainingRun, out: Path, run_id: str) -> KitRun:
        return cls(**{f.name: getattr(run, f.name) for f in dataclasses.fields(TrainingRun)}, out=out, run_id=run_id)

    def send(self) -> Path:
        path = export(self, dtype="float16")
        write_pieces(path, self.out, self.run_id, self.step)
        logger.info("step %d: weights written to %s", self.step, self.out)
        return path

    def save(self) -> Path:
        checkpoint = super().save()
        self.send()
        return checkpoint

    def export(self) -> Path:
        return self.send()


def kit_config(options: Options, info: dict[str, Any]) -> Config:
    """The kit's config with its data and encoder rebuilt in the work folder, and the device's precision."""
    work = options.work
    work.mkdir(parents=True, exist_ok=True)
    config = load_config([options.kit / str(info["config"])], options.overrides)
    data = rebuild(options.kit / "data", work / "data.h5")
    encoder = unpack_weights(options.kit / "encoder", work / "encoder", info["encoder"])
    cuda = options.device == "cuda"
    return dataclasses.replace(
        config, data=dataclasses.replace(config.data, source=str(data), format="auto"),
        text=dataclasses.replace(config.text, encoder=str(encoder), cache_dir=str(work / "text-cache"), device=options.device),
        train=dataclasses.replace(config.train, output_dir=str(work / "runs"), batch_size=options.batch_size,
                                  mixed_precision="bf16" if cuda else "no", num_workers=0, init_from=""))


class Results:
    """results.json in --out, rewritten after each phase so that a killed call returns what it measured."""

    def __init__(self, out: Path, **facts: Any) -> None:
        self.path, self.data = out / RESULTS, dict(facts)
        self.write()

    def __setitem__(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.write()

    def write(self) -> None:
        self.path.with_suffix(".tmp").write_text(json.dumps(self.data, indent=1) + "\n", encoding="utf-8")
        os.replace(self.path.with_suffix(".tmp"), self.path)


def cuda_tests(options: Options, encoder: str, seconds: float) -> dict[str, Any]:
    """pytest -m cuda over tests/test_cuda*.py, its output in the log; their caption encoder is the kit's (the
    bundled MiniLM's package is not on the GPU machine)."""
    tests = sorted(str(p) for p in Path("tests").glob("test_cuda*.py"))
    if not tests:
        return {"skipped": "no tests/test_cuda*.py in this checkout"}
    if subprocess.run([sys.executable, "-c", "import pytest"], capture_output=True).returncode:
        return {"skipped": "pytest is not installed here"}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "cuda", *tests]
    started = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds,
                              env={**os.environ, "FASHIONGEN_TEST_ENCODER": encoder})
    except subprocess.TimeoutExpired:
        return {"failed": f"over {seconds:.0f} s; stopped"}
    with (options.out / LOG).open("a", encoding="utf-8") as log:
        log.write(done.stdout + done.stderr)
    summary = (done.stdout.strip().splitlines() or ["no output"])[-1]
    return {"exit_code": done.returncode, "summary": summary, "seconds": round(time.perf_counter() - started, 1)}


def benchmarks(options: Options, config: Config, deadline: float,
               results: Results) -> tuple[ResidentBatches | None, dict, list]:
    """Ours and the plain loop for each model, eager then compiled, while time is left for training (40% of the
    call; a compiled measurement needs a minute more for compiling)."""
    device = torch.device(options.device)
    peak, spec = bench.matmul_flops(device), bench.spec_flops(device)
    results["peak"] = {"matmul_flops": peak, "spec_flops": spec}
    rows: list[dict[str, Any]] = []
    feed, vocab = None, {}
    reserve = 0.4 * options.minutes * 60  # for training
    for compiled in ((False, True) if options.compile else (False,)):  # every model eager first: compiling is slow
        for name in options.bench_models:
            left = deadline - time.monotonic()
            if rows and left < reserve + 60 * compiled:  # the first always runs: training needs its rate
                rows.append({"model": name, "compile": compiled, "skipped": f"{left:.0f} s left, kept for training"})
                continue
            overrides = dataclasses.replace(config.model, name=name)
            settings = dataclasses.replace(config, model=overrides, train=dataclasses.replace(config.train, compile=compiled))
            try:
                row = _bench_one(settings, options, feed, vocab)
            except Exception as error:  # a measurement that fails (a compiler error, memory) must not cost the training
                logger.exception("benchmark %s (compile=%s) failed", name, compiled)
                rows.append({"model": name, "compile": compiled, "failed": f"{type(error).__name__}: {error}"[:400]})
                continue
            feed, vocab = row.pop("feed"), row.pop("vocab")
            for loop in ("ours", "plain"):
                if row[f"{loop}_images_per_s"]:
                    row[f"{loop}_mfu"] = row["flops_per_image"] * row[f"{loop}_images_per_s"] / peak
                    if spec:
                        row[f"{loop}_mfu_spec"] = row["flops_per_image"] * row[f"{loop}_images_per_s"] / spec
            rows.append(row)
            results["benchmarks"] = rows
            gc.collect()  # the measured run's networks and optimizer, before the next one's
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return feed, vocab, rows


def _bench_one(config: Config, options: Options, feed: ResidentBatches | None, vocab: dict) -> dict[str, Any]:
    work = options.work / "bench"
    steps = options.bench_steps
    train_config = dataclasses.replace(config.train, max_steps=2 * steps, log_every=steps, checkpoint_every=10**6,
                                       validate_every=0, validation_batches=0, validation_prompts=[], warmup_steps=0,
                                       output_dir=str(work))
    run = prepare(dataclasses.replace(config, train=train_config), show_progress=False)
    feed = feed or ResidentBatches.of(run)
    started, missing = time.perf_counter(), None
    ours = bench.ours(run, feed)
    try:
        plain = bench.plain(config, feed, run.vocab, steps, work, config.train.compile)
    except ImportError as error:  # diffusers not carried: said so, never a made-up number
        plain, missing = None, f"diffusers' loop not measured: {error}"
    model = run.ema.module
    flops = bench.flops_per_image(model.to(run.accelerator.device), next(iter(feed)))
    return {"model": config.model.name, "compile": config.train.compile, "batch_size": config.train.batch_size,
            "parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2), "flops_per_image": flops,
            "ours_images_per_s": ours, "plain_images_per_s": plain, "ours_over_plain": ours / plain if plain else missing,
            "seconds": round(time.perf_counter() - started, 1), "feed": feed, "vocab": run.vocab}


def train_for(options: Options, config: Config, feed: ResidentBatches | None, images_per_s: float | None, seconds: float,
              hard_seconds: float) -> dict[str, Any]:
    """Train the kit's model for about `seconds`: max_steps from the measured rate, a checkpoint (and pieces) about
    every minute, and SIGTERM at the hard deadline (the loop saves, then stops)."""
    batch = config.train.batch_size
    if images_per_s is None:  # no measurement succeeded: train until the deadline's signal, checkpoint every 200 steps
        max_steps, every = 10**7, 200
    else:
        max_steps = max(2, int(seconds * images_per_s / batch))
        every = max(1, min(max_steps, int(60 * images_per_s / batch)))
    train_config = dataclasses.replace(config.train, max_steps=max_steps, checkpoint_every=every, validate_every=0,
                                       warmup_steps=min(config.train.warmup_steps, max_steps // 10),
                                       log_every=max(1, min(config.train.log_every, max_steps // 20)))
    run = KitRun.of(prepare(dataclasses.replace(config, train=train_config), show_progress=False), options.out,
                    read_kit(options.kit)["id"])
    weights_mib = sum(p.numel() for p in run.ema.module.parameters()) * 2 / 2**20
    if weights_mib > 5 * PIECE_BYTES / 2**20:
        raise PiecesError(f"{config.model.name}: {weights_mib:.0f} MiB in float16, more than 5 pieces can bring back")
    run.train_loader = dataclasses.replace(feed or ResidentBatches.of(run), batch_size=batch)
    timer = threading.Timer(hard_seconds, lambda: os.kill(os.getpid(), signal.SIGTERM))
    timer.start()
    started, stopped = time.perf_counter(), None
    try:
        train(run, show_progress=False)
    except TrainingStopped as stop:
        stopped = str(stop)
    finally:
        timer.cancel()
    records = run.metrics.read()
    losses = [r["loss"] for r in records if "loss" in r]
    return {"model": config.model.name, "compile": config.train.compile, "batch_size": batch, "max_steps": max_steps,
            "steps": run.step, "images_seen": run.step * batch, "seconds": round(time.perf_counter() - started, 1),
            "checkpoint_every": every, "final_loss": losses[-1] if losses else None,
            "val_loss": next((r["val_loss"] for r in reversed(records) if "val_loss" in r), None), "stopped": stopped}


def environment(options: Options) -> dict[str, Any]:
    device = torch.device(options.device)
    try:
        import diffusers
        diffusers_version = diffusers.__version__
    except ImportError:
        diffusers_version = None
    return {"python": platform.python_version(), "torch": torch.__version__, "device": options.device,
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
            "diffusers": diffusers_version}


def run_kit(options: Options) -> dict[str, Any]:
    """The whole call; returns results.json's content."""
    start = time.monotonic()
    deadline = start + options.minutes * 60
    info = read_kit(options.kit)
    options.out.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(options.out / LOG, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    encoder = info["encoder"]
    results = Results(options.out, kit=info["id"], minutes=options.minutes, environment=environment(options),
                      kit_encoder={"encoder": encoder["encoder"], "full_identity": encoder["full_identity"],
                                   "max_abs_state_difference": encoder["max_abs_state_difference"],
                                   "data_source": info["data_source"]})
    config = kit_config(options, info)
    if options.device == "cuda" and options.tests:
        results["cuda_tests"] = cuda_tests(options, config.text.encoder, min(150.0, options.minutes * 60 / 4))
    else:
        results["cuda_tests"] = {"skipped": "--device cpu" if options.device != "cuda" else "--no-tests"}
    feed, _, rows = benchmarks(options, config, deadline, results)
    trained = [r for r in rows if r.get("model") == config.model.name and "ours_images_per_s" in r]
    measured = trained or [r for r in rows if "ours_images_per_s" in r]
    best = max(measured, key=lambda r: r["ours_images_per_s"]) if measured else {"compile": False, "ours_images_per_s": None}
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, compile=bool(best["compile"]) and bool(trained)))
    margin = min(45.0, 0.1 * options.minutes * 60)  # for the export and the last pieces
    left = deadline - time.monotonic()
    try:
        results["training"] = train_for(options, config, feed, best["ours_images_per_s"], max(1.0, left - margin),
                                        max(2.0, left - margin / 2))
    except Exception as error:  # diverged, out of memory...: said in results.json; the pieces sent so far stay
        results["training"] = {"failed": f"{type(error).__name__}: {error}"[:400]}
        raise
    results["seconds"] = round(time.monotonic() - start, 1)
    logging.getLogger().removeHandler(handler)
    return results.data


__all__ = ["KitRun", "Options", "kit_config", "run_kit"]
