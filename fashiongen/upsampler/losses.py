"""The upsampler's losses as pure functions (the hinge terms are the GAN family's: fashiongen.gan.losses).

    g_loss = l1_weight * reconstruction(sr, hr) + adversarial_weight * generator_hinge(d_fake).mean()
             + feature_weight * feature_matching(fake_features, real_features)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor

from ..gan.losses import discriminator_hinge, generator_hinge


def reconstruction(output: Tensor, target: Tensor) -> Tensor:
    """Per-sample L1 [B] between the upsampled image and the photo."""
    return (output - target).abs().flatten(1).mean(1)


def feature_matching(fake: Sequence[Tensor], real: Sequence[Tensor]) -> Tensor:
    """Mean L1 between the discriminator's features of the upsampled image and of the photo, layer by layer (pix2pixHD);
    the photo's features are constants."""
    return sum(F.l1_loss(f, r.detach()) for f, r in zip(fake, real)) / max(len(fake), 1)


def patch_hinge(real: Tensor, fake: Tensor) -> Tensor:
    """The discriminator's hinge loss, averaged over its patches."""
    return discriminator_hinge(real.flatten(1), fake.flatten(1)).mean()


def patch_generator(fake: Tensor) -> Tensor:
    return generator_hinge(fake.flatten(1)).mean()


__all__ = ["feature_matching", "patch_generator", "patch_hinge", "reconstruction"]
