"""What a critic says about images and captions: embeddings, their agreement, R-precision, attribute
predictions and accuracy, and the Inception-score formula on its category head.

    image_emb = embed_images(critic, images)                          # uint8 [H, W, 3] arrays -> [N, E]
    text_emb = embed_captions(critic, encoder, captions)              # [N, E]; raises if encoder differs
    score, per_item = critic_score(image_emb, text_emb)               # mean cosine image <-> own caption
    mean, std = r_precision(image_emb, text_emb, caption_ids=captions)  # AttnGAN protocol, 1 of 100
    accuracy = attribute_accuracy(critic, image_emb, [{"colour": "Red", "category": "Dresses"}, ...])
    mean, std = critic_inception_score(critic, image_emb)             # IS formula on the category head

Embeddings are L2-normalised, so scores are cosines in [-1, 1] (not x100, not clipped at 0 as
CLIP-score is). The network and its files are in critic.py, which also offers these names.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Hashable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.captions import MISSING_VALUES
from ..data.transforms import resize_square, to_tensor
from ..text import CaptionEncoder
from ..errors import UserError

if TYPE_CHECKING:  # critic.py imports this module (check_encoder for load_critic, and to offer these names)
    from .critic import Critic

logger = logging.getLogger("fashiongen.critic")


class EncoderMismatchError(UserError, ValueError):
    """A critic was given captions from another caption encoder than the one it was trained with."""


def _device_batches(critic: Critic, images: Sequence[np.ndarray] | np.ndarray, batch_size: int):
    for start in range(0, len(images), batch_size):
        chunk = [image if image.shape[:2] == (critic.resolution, critic.resolution)
                 else resize_square(image, critic.resolution, critic.resize_mode, critic.pad_value)
                 for image in images[start : start + batch_size]]
        yield torch.stack([to_tensor(np.ascontiguousarray(image)) for image in chunk]).to(critic.device)  # [b, 3, R, R]


@torch.no_grad()
def embed_images(critic: Critic, images: Sequence[np.ndarray] | np.ndarray, batch_size: int = 256) -> Tensor:
    """uint8 [H, W, 3] images (any size: resized like training) -> L2-normalised embeddings [N, E] (float32, cpu)."""
    found = [critic.encode_image(pixels).float().cpu() for pixels in _device_batches(critic, images, batch_size)]
    return torch.cat(found) if found else torch.zeros(0, critic.embed_dim)


def check_encoder(critic: Critic, encoder_identity: str) -> None:
    """EncoderMismatchError unless `encoder_identity` is the caption encoder the critic was trained with (or it records none)."""
    if critic.encoder_identity and critic.encoder_identity != encoder_identity:
        raise EncoderMismatchError(f"critic trained with encoder {critic.encoder_identity}, got {encoder_identity}; "
                                   "set text.* to the critic's encoder (see its critic.json) or train a critic for this one")


@torch.no_grad()
def embed_captions(critic: Critic, encoder: CaptionEncoder, captions: Sequence[str], batch_size: int = 256) -> Tensor:
    """Captions -> L2-normalised embeddings [N, E] (float32, cpu) through the critic's own caption encoder."""
    check_encoder(critic, encoder.identity)
    found = []
    for start in range(0, len(captions), batch_size):
        text = encoder.encode(list(captions[start : start + batch_size])).to(critic.device)
        found.append(critic.encode_text(text.token_states, text.mask, text.pooled).float().cpu())
    return torch.cat(found) if found else torch.zeros(0, critic.embed_dim)


def critic_score(image_emb: Tensor, text_emb: Tensor) -> tuple[float, Tensor]:
    """Cosine of each image with its own caption [N] and their mean (x100 gives CLIP-score-like numbers)."""
    per_item = (F.normalize(image_emb.float(), dim=-1) * F.normalize(text_emb.float(), dim=-1)).sum(dim=-1)  # [N]
    return float(per_item.mean()) if len(per_item) else float("nan"), per_item


def _caption_groups(caption_ids: Sequence[Hashable] | Tensor | None, count: int) -> Tensor:
    """Integer group per item: items with equal ids (identical caption texts) share one; None: all distinct."""
    if caption_ids is None:
        return torch.arange(count)
    if isinstance(caption_ids, Tensor):
        caption_ids = caption_ids.tolist()
    if len(caption_ids) != count:
        raise ValueError(f"caption_ids has {len(caption_ids)} entries for {count} items")
    numbers: dict[Hashable, int] = {}
    return torch.tensor([numbers.setdefault(key, len(numbers)) for key in caption_ids])


def _draw_distractors(rows: Tensor, groups: Tensor, eligible_counts: Tensor, k: int,
                      generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """For each row, k distinct items of other caption groups, uniformly at random: indices [n, k] and validity [n, k].

    Rows with plenty of eligible items redraw rejected picks (same group, repeats) until none is left,
    O(n k); the others order all items by random keys and take the first k eligible ones (invalid past the last).
    """
    count = len(groups)
    picks = torch.zeros(len(rows), k, dtype=torch.long)
    valid = torch.ones(len(rows), k, dtype=torch.bool)
    few = eligible_counts[rows] <= 2 * k
    if few.any():
        some = rows[few]
        keys = torch.rand(len(some), count, generator=generator)  # [m, N]
        keys = keys.masked_fill(groups[some][:, None] == groups[None, :], -1.0)
        top_keys, picks[few] = keys.topk(k, dim=1)
        valid[few] = top_keys >= 0
    if (~few).any():
        many = rows[~few]
        drawn = torch.randint(0, count, (len(many), k), generator=generator)  # [m, k]
        while True:
            rejected = groups[drawn] == groups[many][:, None]  # [m, k] a caption like the true one
            ordered, order = drawn.sort(dim=1)
            repeated = torch.zeros_like(rejected)
            repeated[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
            rejected |= torch.zeros_like(rejected).scatter(1, order, repeated)  # all but the first of repeated picks
            if not rejected.any():
                break
            drawn[rejected] = torch.randint(0, count, (int(rejected.sum()),), generator=generator)
        picks[~few] = drawn
    return picks, valid


def r_precision_draws(image_emb: Tensor, text_emb: Tensor, num_distractors: int = 99, seed: int = 0,
                      caption_ids: Sequence[Hashable] | Tensor | None = None, num_draws: int = 10) -> tuple[Tensor, int]:
    """R-precision (R=1) of each draw [num_draws], and the fewest distractors any image was ranked against.

    Each image ranks its own caption against `num_distractors` captions of other items drawn without
    replacement (never one with the same text, per `caption_ids`); a hit is the true caption scoring
    strictly highest. With fewer eligible items, all of them are used.
    """
    count = len(image_emb)
    if count != len(text_emb):
        raise ValueError(f"{count} image embeddings but {len(text_emb)} caption embeddings")
    if count < 2:
        raise ValueError("r_precision needs at least two items")
    groups = _caption_groups(caption_ids, count)  # [N]
    eligible_counts = count - torch.bincount(groups)[groups]  # [N] items with another caption
    k = min(num_distractors, count - 1)
    image_emb, text_emb = F.normalize(image_emb.float().cpu(), dim=-1), F.normalize(text_emb.float().cpu(), dim=-1)
    generator = torch.Generator().manual_seed(seed)
    hits = torch.zeros(num_draws)
    chunk = max(1, (1 << 22) // count)  # rows per chunk: [chunk, N] similarities, ~16 MB
    for start in range(0, count, chunk):
        rows = torch.arange(start, min(start + chunk, count))
        similarity = image_emb[rows] @ text_emb.T  # [n, N] image of row i vs every caption
        true_scores = similarity[torch.arange(len(rows)), rows]  # [n]
        for draw in range(num_draws):
            picks, valid = _draw_distractors(rows, groups, eligible_counts, k, generator)  # [n, k]
            scores = similarity.gather(1, picks).masked_fill(~valid, float("-inf"))  # [n, k]
            hits[draw] += (true_scores > scores.max(dim=1).values).sum()
    return hits / count, min(k, int(eligible_counts.min()))


def r_precision(image_emb: Tensor, text_emb: Tensor, num_distractors: int = 99, seed: int = 0,
                caption_ids: Sequence[Hashable] | Tensor | None = None, num_draws: int = 10) -> tuple[float, float]:
    """AttnGAN's R-precision (R=1): mean and std over `num_draws` random draws of distractor captions.

    Chance is 1 / (num_distractors + 1). `caption_ids` (e.g. the caption strings) marks items with
    identical captions, which are never drawn as each other's distractors. With fewer than
    num_distractors + 1 usable items every other item is used, and a warning names how many.
    """
    per_draw, fewest = r_precision_draws(image_emb, text_emb, num_distractors, seed, caption_ids, num_draws)
    if fewest < num_distractors:
        logger.warning("r_precision: some images were ranked against only %d distractors (asked %d); chance there is 1/%d",
                       fewest, num_distractors, fewest + 1)
    return float(per_draw.mean()), float(per_draw.std(unbiased=False))


def _image_embeddings(critic: Critic, images_or_emb: Tensor | Sequence[np.ndarray] | np.ndarray, batch_size: int) -> Tensor:
    if isinstance(images_or_emb, Tensor) and images_or_emb.ndim == 2:
        return images_or_emb.float()
    return embed_images(critic, images_or_emb, batch_size)


@torch.no_grad()
def attribute_probabilities(critic: Critic, images_or_emb: Tensor | Sequence[np.ndarray] | np.ndarray,
                            batch_size: int = 256) -> dict[str, Tensor]:
    """Softmax of each attribute head: name -> [N, K_name] (columns follow critic.vocab[name])."""
    image_emb = _image_embeddings(critic, images_or_emb, batch_size).to(critic.device)
    return {name: logits.float().softmax(dim=-1).cpu() for name, logits in critic.attribute_logits(image_emb).items()}


def predict_attributes(critic: Critic, images_or_emb: Tensor | Sequence[np.ndarray] | np.ndarray,
                       batch_size: int = 256) -> list[dict[str, str]]:
    """The most likely value of each attribute for each image."""
    probabilities = attribute_probabilities(critic, images_or_emb, batch_size)
    count = len(next(iter(probabilities.values()))) if probabilities else 0
    return [{name: critic.vocab[name][int(p[i].argmax())] for name, p in probabilities.items()} for i in range(count)]


def attribute_accuracy(critic: Critic, images_or_emb: Tensor | Sequence[np.ndarray] | np.ndarray,
                       wanted_attributes: Sequence[dict[str, Any]], batch_size: int = 256) -> dict[str, tuple[float, int]]:
    """name -> (share of images whose predicted value is the wanted one, images counted), for the critic's heads.

    Values are compared case-insensitively. An image is skipped for an attribute when its wanted value is
    missing, or unknown to the critic's vocabulary (it could never be predicted; a warning counts them).
    Attributes counted on no image are left out.
    """
    predicted = predict_attributes(critic, images_or_emb, batch_size)
    if len(predicted) != len(wanted_attributes):
        raise ValueError(f"{len(predicted)} images but {len(wanted_attributes)} attribute dicts")
    results: dict[str, tuple[float, int]] = {}
    for name, values in critic.vocab.items():
        known = {value.lower() for value in values}
        correct = counted = unknown = 0
        for guess, wanted in zip(predicted, wanted_attributes):
            value = str(wanted.get(name, "")).strip().lower()
            if value in MISSING_VALUES:
                continue
            if value not in known:
                unknown += 1
                continue
            counted += 1
            correct += guess[name].lower() == value
        if unknown:
            logger.warning("attribute_accuracy: skipped %d images whose %s is not in the critic's vocabulary", unknown, name)
        if counted:
            results[name] = (correct / counted, counted)
    return results


def inception_score(probabilities: Tensor, splits: int = 10) -> tuple[float, float]:
    """exp(E_x KL(p(y|x) || p(y))) per split of [N, K] class probabilities; mean and std over splits."""
    probabilities = probabilities.double()
    scores = []
    for part in torch.tensor_split(probabilities, min(splits, len(probabilities))):
        marginal = part.mean(dim=0, keepdim=True)  # [1, K]
        kl = (part * (torch.log(part.clamp_min(1e-12)) - torch.log(marginal.clamp_min(1e-12)))).sum(dim=1)  # [n]
        scores.append(float(torch.exp(kl.mean())))
    return float(np.mean(scores)), float(np.std(scores))


def critic_inception_score(critic: Critic, images_or_emb: Tensor | Sequence[np.ndarray] | np.ndarray, splits: int = 10,
                           attribute: str = "category", batch_size: int = 256) -> tuple[float, float]:
    """"critic_is": the Inception-score formula on the critic's category head (not Inception's IS, not comparable to it).

    Between 1 (every image gets the same class distribution) and the number of categories (confident,
    evenly spread predictions).
    """
    if attribute not in critic.heads:
        raise ValueError(f"critic_inception_score: the critic has no '{attribute}' head (heads: {', '.join(critic.heads) or 'none'})")
    image_emb = _image_embeddings(critic, images_or_emb, batch_size)
    return inception_score(attribute_probabilities(critic, image_emb, batch_size)[attribute], splits)


__all__ = [
    "EncoderMismatchError", "attribute_accuracy", "attribute_probabilities", "check_encoder", "critic_inception_score",
    "critic_score", "embed_captions", "embed_images", "inception_score", "predict_attributes", "r_precision",
    "r_precision_draws",
]
