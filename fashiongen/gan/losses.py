"""GAN losses as pure functions of logits: hinge loss with mismatched-caption negatives (its terms are shared with the
upsampler: fashiongen.models.adversarial), and the matching-aware gradient penalty (MA-GP, DF-GAN) that smooths the
discriminator around real images with their own captions.

    d_loss = discriminator_hinge(real_logits, fake_logits, mismatched_logits)   # per-sample [B]
    penalty = matching_aware_penalty(discriminator, real_images, pooled_text)    # [B]
    g_loss = generator_hinge(fake_logits)                                        # [B]
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch
from torch import Tensor, nn

from ..models.adversarial import discriminator_hinge, generator_hinge  # shared with the upsampler; re-exported


def mismatched_rows(caption_keys: Sequence[Hashable], generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """For each row, another row whose caption differs from its own (never an identical caption, which would be a
    true pair): (indices [B], valid [B] bool; False where every caption in the batch is the same as the row's)."""
    count = len(caption_keys)
    shift = torch.randint(1, max(count, 2), (1,), generator=generator).item() if count > 1 else 0
    indices, valid = torch.zeros(count, dtype=torch.long), torch.zeros(count, dtype=torch.bool)
    for row in range(count):
        for step in range(count - 1):  # from a random offset, the first row with another caption
            other = (row + shift + step) % count
            if other != row and caption_keys[other] != caption_keys[row]:
                indices[row], valid[row] = other, True
                break
    return indices, valid


def matching_aware_penalty(discriminator: nn.Module, images: Tensor, pooled: Tensor, attribute_ids: Tensor | None = None,
                           weight: float = 2.0, power: float = 6.0) -> Tensor:
    """MA-GP [B]: weight * ||(d logit / d image, d logit / d caption embedding)||_2 ** power at real images with their
    own captions (DF-GAN: weight 2, power 6); differentiable, so adding it to the loss trains the discriminator smooth."""
    images = images.detach().requires_grad_(True)
    pooled = pooled.detach().requires_grad_(True)
    logits = discriminator(images, pooled, attribute_ids)
    grad_image, grad_text = torch.autograd.grad(logits.sum(), (images, pooled), create_graph=True)
    norm = torch.sqrt(grad_image.flatten(1).pow(2).sum(1) + grad_text.flatten(1).pow(2).sum(1) + 1e-12)  # [B]
    return weight * norm.pow(power)


__all__ = ["discriminator_hinge", "generator_hinge", "matching_aware_penalty", "mismatched_rows"]
