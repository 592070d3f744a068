"""The critic's trainer (the network and its files: fashiongen/evaluation/critic.py): InfoNCE on image/caption pairs
of the training split plus attribute heads on the image embedding (critic_data.py), run by the one loop (engine.py)
with its schedule in critic.* (learning rate, logging, validation, checkpoints).

    python -m fashiongen.train critic configs/critic.yaml [key=value ...]    # or evaluate.py --train-critic SOURCE
    path = train_critic(load_config(["configs/critic.yaml"]))                 # runs/critic-products64/

Images are pre-resized into memory and caption embeddings precomputed, so a step is one small CNN
forward/backward. Running the same command again resumes from the newest checkpoint in critic.output_dir.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DataLoaderConfiguration, set_seed
from torch import Tensor, nn
from torch.utils.data import DataLoader, default_collate

from ..config import Config, ConfigError, load_config, save_config, split_cli_args
from ..errors import command
from ..data import FashionDataset, open_from_config
from ..evaluation.critic import Critic, attribute_probabilities, critic_score, embed_captions, embed_images, r_precision, save_critic
from ..runs import MetricsLog, checkpoint_dirs, read_state
from ..text import CaptionEncoder, TextEncoding
from .checkpoint import save_checkpoint
from .critic_data import (
    IGNORE_INDEX,
    CriticExamples,
    attribute_loss,
    build_critic,
    contrastive_loss,
    critic_loss,
    load_examples,
    unwrap,
)
from .data import EpochSampler, attribute_vocabulary, precompute_captions
from .device import fused, to_device, with_resolved_precision
from .engine import DeviceSums, Trainer, run_training, training_failed
from .schedule import Schedule, TrainingStopped, lr_at
from .setup import setting

logger = logging.getLogger("fashiongen.critic")

# Settings a resumed critic run must share with its checkpoint (anything else may change, e.g. max_steps).
_FROZEN_KEYS = ("seed", "text", "data.source", "data.format", "data.split", "data.val_fraction", "data.resize_mode",
                "data.pad_value", "data.caption_mode", "data.caption_template", "data.caption_field", "critic.resolution",
                "critic.channels", "critic.embed_dim", "critic.text_hidden", "critic.token_attention", "critic.attributes")


@dataclass
class CriticRun(Trainer):
    """Everything the training steps share; built by `CriticRun.build` (`prepare_critic`)."""

    name: ClassVar[str] = "critic"
    hint: ClassVar[str] = "Lower critic.learning_rate"
    logged: ClassVar[tuple[str, ...]] = ("loss", "contrastive", "attribute", "grad_norm")

    config: Config
    accelerator: Accelerator
    run_dir: Path  # critic.output_dir
    critic: nn.Module  # prepared (DDP-wrapped when distributed)
    optimizer: torch.optim.Optimizer
    encoder: CaptionEncoder
    vocab: dict[str, list[str]]
    train_examples: CriticExamples
    train_loader: DataLoader
    val_examples: CriticExamples | None
    metrics: MetricsLog
    steps_per_epoch: int
    step: int = 0
    started: float = field(default_factory=time.perf_counter)
    validation: dict[str, float] = field(default_factory=dict)  # the latest validation's results

    @property
    def images_per_step(self) -> int:
        return self.config.critic.batch_size * self.accelerator.num_processes

    @property
    def model(self) -> Critic:
        return unwrap(self.critic)

    @property
    def out_dir(self) -> Path:
        return self.run_dir

    @property
    def schedule(self) -> Schedule:
        return self.config.critic

    @property
    def label(self) -> str:
        return "critic"

    @classmethod
    def build(cls, config: Config, resume: Path | None = None, show_progress: bool = True) -> CriticRun:
        """The critic resumes from the newest checkpoint in critic.output_dir by itself: `resume` is not used."""
        return prepare_critic(config, show_progress)

    def new_sums(self) -> DeviceSums:
        return DeviceSums(self.accelerator.device, self.logged, checked=("loss",))

    def train_step(self, batch: dict[str, Any]) -> dict[str, Any]:
        return critic_train_step(self, batch)

    def log_extras(self) -> dict[str, Any]:
        return {"lr": lr_at(self.step - 1, self.config.critic), "logit_scale": float(self.model.scale().detach())}

    def validate(self) -> dict[str, Any]:
        """On rank 0 (it embeds the whole validation set there)."""
        self.validation = validate_critic(self) if self.accelerator.is_main_process else {}
        self.accelerator.wait_for_everyone()
        return self.validation

    def save(self) -> Path:
        return save_critic_checkpoint(self)

    def export(self) -> Path:
        return export_critic(self)

    def stopped(self, signum: int, checkpoint: Path) -> TrainingStopped:
        return TrainingStopped(signum, checkpoint, "the same command (it resumes from critic.output_dir)")


def _check_resume(saved: Config, config: Config, checkpoint: Path) -> None:
    problems = [f"{key}: checkpoint has {setting(saved, key)!r}, now {setting(config, key)!r}"
                for key in _FROZEN_KEYS if setting(saved, key) != setting(config, key)]
    if problems:
        raise ConfigError(f"critic.output_dir holds {checkpoint} of a different critic ({'; '.join(problems)}); "
                          "choose another critic.output_dir or delete that directory")


def prepare_critic(config: Config, show_progress: bool = True) -> CriticRun:
    """Open data, pre-resize images into memory, precompute caption embeddings, build critic and optimizer,
    and restore the newest checkpoint in critic.output_dir if there is one."""
    config = with_resolved_precision(config)  # critic.mixed_precision "auto": bf16 on CUDA or a bf16 CPU
    critic_config = config.critic
    out_dir = Path(critic_config.output_dir)
    checkpoints = checkpoint_dirs(out_dir)
    latest = checkpoints[-1] if checkpoints else None
    if latest is not None:
        _check_resume(load_config([latest / "config.yaml"]), config, latest)
    AcceleratorState._reset_state(reset_partial_state=False)  # a second run in one process may pick another precision
    accelerator = Accelerator(mixed_precision=critic_config.mixed_precision, cpu=not torch.cuda.is_available(),
                              dataloader_config=DataLoaderConfiguration(non_blocking=torch.cuda.is_available()))
    set_seed(config.seed)
    is_main = accelerator.is_main_process
    out_dir.mkdir(parents=True, exist_ok=True)

    train_source = open_from_config(config.data)
    val_source = None
    if config.data.split == "train" and config.data.val_fraction > 0:
        val_source = open_from_config(config.data, split="validation")
    if latest is not None:
        vocab = read_state(latest)["attribute_vocab"]
    else:
        try:
            vocab = attribute_vocabulary(train_source, critic_config.attributes)
        except ConfigError as error:
            raise ConfigError(str(error).replace("model.attributes", "critic.attributes")) from None
    train_examples = load_examples(train_source, config, vocab, show_progress=show_progress and is_main, hflip=critic_config.hflip)
    val_examples = None
    if val_source is not None and len(val_source):
        val_examples = load_examples(val_source, config, vocab, limit=critic_config.validation_items, show_progress=show_progress and is_main)

    text_config = config.text
    if not text_config.cache_dir:  # training reads embeddings from a cache; keep it inside the output directory
        text_config = dataclasses.replace(text_config, cache_dir=str(out_dir / "text-cache"))
    with accelerator.main_process_first():  # the first process creates the cache file
        encoder = CaptionEncoder(text_config)
    datasets = [FashionDataset(s, config.data, config.seed) for s in (train_source, val_source) if s is not None]
    precompute_captions(encoder, datasets, show_progress=show_progress and is_main,  # every rank a share
                        rank=accelerator.process_index, world_size=accelerator.num_processes, device=accelerator.device)

    critic = build_critic(config, encoder.dim, vocab)
    critic.encoder_identity = encoder.identity
    decay = [p for p in critic.parameters() if p.ndim >= 2]
    no_decay = [p for p in critic.parameters() if p.ndim < 2]  # norms, biases, the logit scale
    groups = [{"params": decay, "weight_decay": critic_config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=critic_config.learning_rate,
                                  fused=fused(accelerator.device, critic_config.fused_adam))
    global_batch = critic_config.batch_size * accelerator.num_processes
    sampler = EpochSampler(len(train_examples), config.seed, global_batch)
    loader = DataLoader(train_examples, batch_size=critic_config.batch_size, sampler=sampler, drop_last=True, num_workers=0,
                        collate_fn=default_collate, pin_memory=torch.cuda.is_available())
    critic, optimizer, loader = accelerator.prepare(critic, optimizer, loader)
    run = CriticRun(config=config, accelerator=accelerator, run_dir=out_dir, critic=critic, optimizer=optimizer, encoder=encoder,
                    vocab=vocab, train_examples=train_examples, train_loader=loader, val_examples=val_examples,
                    metrics=MetricsLog(out_dir / "metrics.jsonl"), steps_per_epoch=len(sampler) // global_batch)
    if latest is not None:
        accelerator.load_state(str(latest))
        run.step = int(read_state(latest)["step"])
    if is_main:
        save_config(config, out_dir / "config.yaml")
        run.metrics.truncate_after(run.step)  # a resumed run repeats the steps after its checkpoint
        logger.info("critic %s: %.2fM parameters, %d training / %d validation images, %d steps per epoch%s", out_dir,
                    sum(p.numel() for p in run.model.parameters()) / 1e6, len(train_examples),
                    len(val_examples) if val_examples is not None else 0, run.steps_per_epoch,
                    f", resumed at step {run.step} from {latest.name}" if latest is not None else "")
    return run


def critic_train_step(run: CriticRun, batch: dict[str, Any]) -> dict[str, Tensor]:
    """One optimizer step on one batch: caption embeddings from the cache, forward, backward, clip, step; its
    numbers stay on the device.

    With several processes each contrasts its own batch (negatives are not gathered across processes).
    """
    critic_config, accelerator = run.config.critic, run.accelerator
    cached = run.encoder.encode(batch["caption"])  # cached: no encoder forward pass
    text = TextEncoding(*(to_device(part, accelerator.device) for part in (cached.token_states, cached.mask, cached.pooled)))
    for group in run.optimizer.param_groups:
        group["lr"] = lr_at(run.step, critic_config)
    with accelerator.autocast():
        loss, parts = critic_loss(run.critic, batch, text, critic_config.attribute_loss_weight)
    accelerator.backward(loss)
    grad_norm = accelerator.clip_grad_norm_(run.critic.parameters(), critic_config.max_grad_norm or float("inf"))
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    return {"loss": loss.detach(), **parts, "grad_norm": grad_norm}


@torch.no_grad()
def validate_critic(run: CriticRun) -> dict[str, float]:
    """On the validation images: contrastive loss, critic score, R-precision (1 of num_distractors + 1), attribute accuracy."""
    examples = run.val_examples
    if examples is None or len(examples) < 2:
        return {}
    critic, critic_config = run.model, run.config.critic
    image_emb = embed_images(critic, examples.images, batch_size=256)  # [N, E]
    text_emb = embed_captions(critic, run.encoder, examples.captions, batch_size=256)  # [N, E]
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(run.config.seed))  # mixed batches
    scale = critic.scale().cpu()
    caption_ids = torch.from_numpy(examples.caption_ids)
    losses = [contrastive_loss(image_emb[part], text_emb[part], scale, caption_ids[part])
              for part in order.split(critic_config.batch_size) if len(part) > 1]
    r_mean, r_std = r_precision(image_emb, text_emb, critic_config.num_distractors, seed=run.config.seed, caption_ids=examples.captions)
    results = {"val_loss": float(torch.cat(losses).mean()), "val_critic_score": critic_score(image_emb, text_emb)[0],
               "val_r_precision": r_mean, "val_r_precision_std": r_std,
               "val_r_precision_chance": 1.0 / (min(critic_config.num_distractors, len(examples) - 1) + 1)}
    labels = torch.from_numpy(examples.attribute_ids)  # [N, K]
    accuracies = []
    for k, (name, probabilities) in enumerate(attribute_probabilities(critic, image_emb).items()):
        known = labels[:, k] != IGNORE_INDEX
        if known.any():
            results[f"val_{name}_accuracy"] = float((probabilities[known].argmax(dim=1) == labels[known, k]).float().mean())
            accuracies.append(results[f"val_{name}_accuracy"])
    if accuracies:
        results["val_attribute_accuracy"] = float(np.mean(accuracies))
    return results


def save_critic_checkpoint(run: CriticRun) -> Path:
    """Accelerate state + config + state.json into checkpoints/step_N, atomically (the generator's checkpoint code)."""
    state = {"epoch": run.step // run.steps_per_epoch, "attribute_vocab": run.vocab, "text_identity": run.encoder.identity,
             "text_dim": run.encoder.dim, "num_processes": run.accelerator.num_processes,
             "images_per_step": run.images_per_step, "time": time.time()}
    return save_checkpoint(run.accelerator, run.run_dir, run.step, None, run.config, state, run.config.critic.keep_checkpoints)


def export_critic(run: CriticRun) -> Path:
    """critic.safetensors + critic.json in critic.output_dir (rank 0), with the latest validation's results."""
    if run.accelerator.is_main_process:
        critic_config, accelerator = run.config.critic, run.accelerator
        training = {"steps": run.step, "images_seen": run.step * run.images_per_step, "batch_size": critic_config.batch_size,
                    "num_processes": accelerator.num_processes, "train_images": len(run.train_examples),
                    "val_images": len(run.val_examples) if run.val_examples is not None else 0,
                    "device": str(accelerator.device), "seconds_this_session": round(time.perf_counter() - run.started, 1)}
        save_critic(run.model, run.encoder.identity, run.vocab, run.config, run.run_dir, training=training,
                    validation=run.validation)
        logger.info("critic saved to %s: %s", run.run_dir, json.dumps(run.validation))
    run.accelerator.wait_for_everyone()
    return run.run_dir


def train_critic(config: Config, show_progress: bool = True) -> Path:
    """Train (or resume, from the newest checkpoint in critic.output_dir) and save critic.safetensors + critic.json there."""
    return run_training(prepare_critic(config, show_progress), show_progress)


@command(training_failed)
def critic_command(args: Sequence[str], show_progress: bool = True) -> int:
    """`python -m fashiongen.train critic CONFIG [key=value ...]`: train (or resume) and print the critic's directory.
    A bad setting or dataset is one `error:` line and exit code 2; a stop signal saves a checkpoint first (its line,
    128 + the signal); a diverged run, exit 1."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("accelerate").setLevel(logging.WARNING)  # it logs every file of every checkpoint
    paths, overrides = split_cli_args(list(args))
    print(train_critic(load_config(paths, overrides), show_progress))
    return 0


__all__ = [
    "CriticExamples", "CriticRun", "IGNORE_INDEX", "attribute_loss", "build_critic", "command", "contrastive_loss",
    "critic_loss", "critic_train_step", "export_critic", "load_examples", "prepare_critic", "save_critic_checkpoint",
    "train_critic", "validate_critic",
]
