"""Training the text-image critic (the network and its files: fashiongen/evaluation/critic.py): InfoNCE on
image/caption pairs of the training split plus attribute heads on the image embedding, in the generator
loop's named steps and with its schedule (schedule.py: learning rate, logging, validation, checkpoints).

    python -m fashiongen.train critic configs/critic.yaml [key=value ...]    # or evaluate.py --train-critic SOURCE
    path = train_critic(load_config(["configs/critic.yaml"]))                 # runs/critic-products64/

Images are pre-resized into memory and caption embeddings precomputed, so a step is one small CNN
forward/backward. Running the same command again resumes from the newest checkpoint in critic.output_dir.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, default_collate
from tqdm import tqdm

from ..config import Config, ConfigError, config_to_dict, load_config, save_config, split_cli_args
from ..data import DataError, FashionDataset, RecordError, SkipLog, Source, open_from_config
from ..data.captions import build_caption
from ..data.transforms import resize_square, to_tensor
from ..evaluation.critic import Critic, attribute_probabilities, critic_score, embed_captions, embed_images, r_precision, save_critic
from ..runs import MetricsLog, checkpoint_dirs, read_state
from ..text import CaptionEncoder
from . import schedule
from .checkpoint import save_checkpoint
from .data import EpochSampler, attribute_vocabulary, example_seed, precompute_captions

logger = logging.getLogger("fashiongen.critic")

IGNORE_INDEX = -100  # attribute label of an example whose value is missing
# Settings a resumed critic run must share with its checkpoint (anything else may change, e.g. max_steps).
_FROZEN_KEYS = ("seed", "text", "data.source", "data.format", "data.split", "data.val_fraction", "data.resize_mode",
                "data.pad_value", "data.caption_mode", "data.caption_template", "data.caption_field", "critic.resolution",
                "critic.channels", "critic.embed_dim", "critic.text_hidden", "critic.token_attention", "critic.attributes")


def build_critic(config: Config, text_dim: int, vocab: dict[str, list[str]]) -> Critic:
    c = config.critic
    return Critic(resolution=c.resolution, channels=c.channels, embed_dim=c.embed_dim, text_dim=text_dim, text_hidden=c.text_hidden,
                  token_attention=c.token_attention, vocab=vocab, resize_mode=config.data.resize_mode, pad_value=config.data.pad_value)


# ------------------------------------------------------------------------------------------------ loss


def contrastive_loss(image_emb: Tensor, text_emb: Tensor, logit_scale: Tensor, caption_ids: Tensor) -> Tensor:
    """Symmetric InfoNCE per example [B]; other examples with the same caption are not negatives (masked out)."""
    logits = logit_scale * image_emb @ text_emb.T  # [B, B] image i vs caption j
    same = caption_ids[:, None] == caption_ids[None, :]  # [B, B]
    same.fill_diagonal_(False)
    logits = logits.masked_fill(same, float("-inf"))
    targets = torch.arange(len(logits), device=logits.device)
    return 0.5 * (F.cross_entropy(logits, targets, reduction="none") + F.cross_entropy(logits.T, targets, reduction="none"))


def attribute_loss(logits: dict[str, Tensor], attribute_ids: Tensor) -> Tensor:
    """Mean over heads of the cross-entropy on examples whose value is known (attribute_ids [B, K], IGNORE_INDEX missing)."""
    losses = [F.cross_entropy(head_logits, attribute_ids[:, k], ignore_index=IGNORE_INDEX)
              for k, head_logits in enumerate(logits.values()) if (attribute_ids[:, k] != IGNORE_INDEX).any()]
    return torch.stack(losses).mean() if losses else attribute_ids.new_zeros((), dtype=torch.float32)


def critic_loss(critic: nn.Module, batch: dict[str, Any], text: Any, attribute_weight: float) -> tuple[Tensor, dict[str, Tensor]]:
    """InfoNCE + attribute_weight * attribute cross-entropy for one batch; also the two parts (detached)."""
    image_emb, text_emb, scale, logits = critic(batch["pixel_values"], text.token_states, text.mask, text.pooled)
    contrastive = contrastive_loss(image_emb, text_emb, scale, batch["caption_id"]).mean()
    attribute = attribute_loss(logits, batch["attribute_ids"])
    return contrastive + attribute_weight * attribute, {"contrastive": contrastive.detach(), "attribute": attribute.detach()}


def _unwrap(module: nn.Module) -> Critic:
    while not isinstance(module, Critic) and hasattr(module, "module"):
        module = module.module
    return module  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------- data


class CriticExamples(Dataset):
    """Pre-resized images in memory with captions and attribute labels; flips drawn per (seed, epoch, index)."""

    def __init__(self, images: np.ndarray, captions: list[str], attribute_ids: np.ndarray, seed: int, hflip: bool) -> None:
        self.images = images  # [N, R, R, 3] uint8
        self.captions = captions
        numbers: dict[str, int] = {}
        self.caption_ids = np.array([numbers.setdefault(c, len(numbers)) for c in captions], dtype=np.int64)  # [N]
        self.attribute_ids = attribute_ids  # [N, K] int64, IGNORE_INDEX where missing
        self.seed, self.hflip, self.epoch = seed, hflip, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image = self.images[index]
        if self.hflip and example_seed(self.seed, self.epoch, index) & 1:
            image = image[:, ::-1]
        return {"pixel_values": to_tensor(np.ascontiguousarray(image)), "caption": self.captions[index],
                "caption_id": int(self.caption_ids[index]), "attribute_ids": torch.from_numpy(self.attribute_ids[index]),
                "index": index}


def load_examples(source: Source, config: Config, vocab: dict[str, list[str]], limit: int = 0,
                  show_progress: bool = True, hflip: bool = False) -> CriticExamples:
    """Read, resize (to critic.resolution) and caption every record of `source` (or `limit`, evenly spaced) into memory."""
    indices = range(len(source))
    if limit and limit < len(source):
        indices = np.linspace(0, len(source) - 1, limit).round().astype(int).tolist()
    template = config.data.caption_template or source.caption_template
    resolution = config.critic.resolution
    images, captions, labels = [], [], []
    skipped = SkipLog(skip=config.data.skip_bad_records)
    for index in tqdm(indices, desc=f"loading {getattr(source, 'split_name', 'images')}", unit="img", disable=not show_progress):
        try:
            record = source[index]
            caption = build_caption(record.caption, record.attributes, config.data.caption_mode, template)
        except RecordError as error:
            skipped.defect(error)
            continue
        images.append(resize_square(record.image, resolution, config.data.resize_mode, config.data.pad_value))
        captions.append(caption)
        labels.append([_label(record.attributes.get(name), values) for name, values in vocab.items()])
    if skipped:
        logger.warning("%s", skipped.summary())
    images_array = np.stack(images) if images else np.zeros((0, resolution, resolution, 3), np.uint8)
    return CriticExamples(images_array, captions, np.array(labels, dtype=np.int64).reshape(len(images), len(vocab)),
                          config.seed, hflip)


def _label(value: Any, values: list[str]) -> int:
    value = str(value if value is not None else "").strip()
    return values.index(value) if value in values else IGNORE_INDEX


# ------------------------------------------------------------------------------------------ training


@dataclass
class CriticRun:
    """Everything the training steps share; built by `prepare_critic`."""

    config: Config
    accelerator: Accelerator
    out_dir: Path
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

    @property
    def images_per_step(self) -> int:
        return self.config.critic.batch_size * self.accelerator.num_processes

    @property
    def model(self) -> Critic:
        return _unwrap(self.critic)


def _flat(config: Config, dotted: str) -> Any:
    value: Any = config_to_dict(config)
    for part in dotted.split("."):
        value = value[part]
    return value


def _check_resume(saved: Config, config: Config, checkpoint: Path) -> None:
    problems = [f"{key}: checkpoint has {_flat(saved, key)!r}, now {_flat(config, key)!r}"
                for key in _FROZEN_KEYS if _flat(saved, key) != _flat(config, key)]
    if problems:
        raise ConfigError(f"critic.output_dir holds {checkpoint} of a different critic ({'; '.join(problems)}); "
                          "choose another critic.output_dir or delete that directory")


def prepare_critic(config: Config, show_progress: bool = True) -> CriticRun:
    """Open data, pre-resize images into memory, precompute caption embeddings, build critic and optimizer,
    and restore the newest checkpoint in critic.output_dir if there is one."""
    c = config.critic
    out_dir = Path(c.output_dir)
    checkpoints = checkpoint_dirs(out_dir)
    latest = checkpoints[-1] if checkpoints else None
    if latest is not None:
        _check_resume(load_config([latest / "config.yaml"]), config, latest)
    AcceleratorState._reset_state(reset_partial_state=False)  # a second run in one process may pick another precision
    accelerator = Accelerator(mixed_precision=c.mixed_precision, cpu=not torch.cuda.is_available())
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
            vocab = attribute_vocabulary(train_source, c.attributes)
        except ConfigError as error:
            raise ConfigError(str(error).replace("model.attributes", "critic.attributes")) from None
    train_examples = load_examples(train_source, config, vocab, show_progress=show_progress and is_main, hflip=c.hflip)
    val_examples = None
    if val_source is not None and len(val_source):
        val_examples = load_examples(val_source, config, vocab, limit=c.validation_items, show_progress=show_progress and is_main)

    text_config = config.text
    if not text_config.cache_dir:  # training reads embeddings from a cache; keep it inside the output directory
        text_config = dataclasses.replace(text_config, cache_dir=str(out_dir / "text-cache"))
    with accelerator.main_process_first():
        encoder = CaptionEncoder(text_config)
        datasets = [FashionDataset(s, config.data, config.seed) for s in (train_source, val_source) if s is not None]
        precompute_captions(encoder, datasets, show_progress=show_progress and is_main)

    critic = build_critic(config, encoder.dim, vocab)
    critic.encoder_identity = encoder.identity
    decay = [p for p in critic.parameters() if p.ndim >= 2]
    no_decay = [p for p in critic.parameters() if p.ndim < 2]  # norms, biases, the logit scale
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": c.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=c.learning_rate)
    global_batch = c.batch_size * accelerator.num_processes
    sampler = EpochSampler(len(train_examples), config.seed, global_batch)
    loader = DataLoader(train_examples, batch_size=c.batch_size, sampler=sampler, drop_last=True, num_workers=0,
                        collate_fn=default_collate)
    critic, optimizer, loader = accelerator.prepare(critic, optimizer, loader)
    run = CriticRun(config=config, accelerator=accelerator, out_dir=out_dir, critic=critic, optimizer=optimizer, encoder=encoder,
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


def critic_train_step(run: CriticRun, batch: dict[str, Any]) -> dict[str, float]:
    """One optimizer step on one batch: caption embeddings from the cache, forward, backward, clip, step.

    With several processes each contrasts its own batch (negatives are not gathered across processes).
    """
    c, accelerator = run.config.critic, run.accelerator
    text = run.encoder.encode(batch["caption"]).to(accelerator.device)  # cached: no encoder forward pass
    for group in run.optimizer.param_groups:
        group["lr"] = schedule.lr_at(run.step, c)
    with accelerator.autocast():
        loss, parts = critic_loss(run.critic, batch, text, c.attribute_loss_weight)
    accelerator.backward(loss)
    grad_norm = accelerator.clip_grad_norm_(run.critic.parameters(), c.max_grad_norm or float("inf"))
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    return {"loss": float(loss.detach()), **{k: float(v) for k, v in parts.items()}, "grad_norm": float(grad_norm)}


@torch.no_grad()
def validate_critic(run: CriticRun) -> dict[str, float]:
    """On the validation images: contrastive loss, critic score, R-precision (1 of num_distractors + 1), attribute accuracy."""
    examples = run.val_examples
    if examples is None or len(examples) < 2:
        return {}
    critic, c = run.model, run.config.critic
    image_emb = embed_images(critic, examples.images, batch_size=256)  # [N, E]
    text_emb = embed_captions(critic, run.encoder, examples.captions, batch_size=256)  # [N, E]
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(run.config.seed))  # mixed batches
    scale = critic.scale().cpu()
    caption_ids = torch.from_numpy(examples.caption_ids)
    losses = [contrastive_loss(image_emb[part], text_emb[part], scale, caption_ids[part])
              for part in order.split(c.batch_size) if len(part) > 1]
    r_mean, r_std = r_precision(image_emb, text_emb, c.num_distractors, seed=run.config.seed, caption_ids=examples.captions)
    results = {"val_loss": float(torch.cat(losses).mean()), "val_critic_score": critic_score(image_emb, text_emb)[0],
               "val_r_precision": r_mean, "val_r_precision_std": r_std,
               "val_r_precision_chance": 1.0 / (min(c.num_distractors, len(examples) - 1) + 1)}
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
    return save_checkpoint(run.accelerator, run.out_dir, run.step, None, run.config, state, run.config.critic.keep_checkpoints)


def _validate_on_main(run: CriticRun) -> None:
    """Validation on rank 0 (it embeds the whole validation set there), logged to metrics.jsonl."""
    if run.accelerator.is_main_process:
        schedule.write_metrics(run, validate_critic(run))
    run.accelerator.wait_for_everyone()


def train_critic(config: Config, show_progress: bool = True) -> Path:
    """Train (or resume, from the newest checkpoint in critic.output_dir) and save critic.safetensors + critic.json there."""
    run = prepare_critic(config, show_progress)
    c, accelerator = config.critic, run.accelerator
    is_main = accelerator.is_main_process
    progress = tqdm(total=c.max_steps, initial=min(run.step, c.max_steps), desc="critic", unit="step", dynamic_ncols=True,
                    disable=not (show_progress and is_main))
    sums: dict[str, float] = {}
    clock, started = schedule.Throughput(), time.perf_counter()
    try:
        with schedule.StopSignals() as stop:
            for epoch, batch in schedule.epoch_batches(run, c.max_steps):
                values = critic_train_step(run, batch)
                diverged, signum = schedule.across_processes(accelerator, not math.isfinite(values["loss"]), stop.received)
                if diverged:
                    raise schedule.TrainingDiverged(f"critic loss became {values['loss']} at step {run.step}; "
                                                    "lower critic.learning_rate")
                run.step += 1
                clock.count_step()
                progress.update(1)
                for key, value in values.items():
                    sums[key] = sums.get(key, 0.0) + value
                if schedule.log_due(run.step, c):
                    record = {key: value / clock.steps for key, value in sums.items()}
                    record.update(epoch=epoch, lr=schedule.lr_at(run.step - 1, c), logit_scale=float(run.model.scale().detach()),
                                  images_per_s=clock.images_per_s(run.images_per_step))
                    schedule.write_metrics(run, record)
                    progress.set_postfix(loss=f"{record['loss']:.3f}", img_s=f"{record['images_per_s']:.0f}")
                    sums = {}
                    clock.restart()
                if signum:
                    raise schedule.TrainingStopped(int(signum), save_critic_checkpoint(run),
                                                   "the same command (it resumes from critic.output_dir)")
                schedule.validate_and_checkpoint(run.step, c, clock, validate=lambda: _validate_on_main(run),
                                                 save=lambda: save_critic_checkpoint(run))
            schedule.save_last_checkpoint(run.out_dir, run.step, lambda: save_critic_checkpoint(run))
            if is_main:
                validation = validate_critic(run)
                schedule.write_metrics(run, validation)
                training = {"steps": run.step, "images_seen": run.step * run.images_per_step, "batch_size": c.batch_size,
                            "num_processes": accelerator.num_processes, "train_images": len(run.train_examples),
                            "val_images": len(run.val_examples) if run.val_examples is not None else 0,
                            "device": str(accelerator.device), "seconds_this_session": round(time.perf_counter() - started, 1)}
                save_critic(run.model, run.encoder.identity, run.vocab, config, run.out_dir, training=training, validation=validation)
                logger.info("critic saved to %s: %s", run.out_dir, json.dumps(validation))
            accelerator.wait_for_everyone()
    finally:
        progress.close()
        accelerator.end_training()
    return run.out_dir


def command(args: Sequence[str], show_progress: bool = True) -> int:
    """`python -m fashiongen.train critic CONFIG [key=value ...]`: train (or resume) and print the critic's directory.
    A bad setting or dataset is one `error:` line and exit code 2; a stop signal saves a checkpoint first."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("accelerate").setLevel(logging.WARNING)  # it logs every file of every checkpoint
    paths, overrides = split_cli_args(list(args))
    try:
        print(train_critic(load_config(paths, overrides), show_progress))
    except (ConfigError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except schedule.TrainingDiverged as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except schedule.TrainingStopped as stopped:
        print(str(stopped), file=sys.stderr)
        return stopped.exit_code
    return 0


__all__ = [
    "CriticExamples", "CriticRun", "IGNORE_INDEX", "attribute_loss", "build_critic", "command", "contrastive_loss",
    "critic_loss", "critic_train_step", "load_examples", "prepare_critic", "save_critic_checkpoint", "train_critic",
    "validate_critic",
]
