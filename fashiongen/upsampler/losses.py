"""The upsampler's losses as pure functions (the hinge and feature-matching terms are shared with the GAN family:
fashiongen.models.adversarial).

    g_loss = l1_weight * reconstruction(sr, hr) + adversarial_weight * generator_hinge(d_fake).mean()
             + feature_weight * feature_matching(fake_features, real_features)
"""

from __future__ import annotations

from torch import Tensor

from ..models.adversarial import discriminator_hinge, feature_matching, generator_hinge


def reconstruction(output: Tensor, target: Tensor) -> Tensor:
    """Per-sample L1 [B] between the upsampled image and the photo."""
    return (output - target).abs().flatten(1).mean(1)


def patch_hinge(real: Tensor, fake: Tensor) -> Tensor:
    """The discriminator's hinge loss, averaged over its patches."""
    return discriminator_hinge(real.flatten(1), fake.flatten(1)).mean()


def patch_generator(fake: Tensor) -> Tensor:
    return generator_hinge(fake.flatten(1)).mean()


__all__ = ["feature_matching", "patch_generator", "patch_hinge", "reconstruction"]
