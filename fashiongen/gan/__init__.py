"""The GAN family: a DF-GAN-style one-forward generator, its discriminator, hinge + MA-GP losses, DiffAugment."""

from .augment import diff_augment
from .losses import discriminator_hinge, generator_hinge, matching_aware_penalty, mismatched_rows
from .networks import GANS, Discriminator, GANSpec, TextGenerator, check_gan_description, get_gan_spec

__all__ = ["GANS", "Discriminator", "GANSpec", "TextGenerator", "check_gan_description", "diff_augment",
           "discriminator_hinge", "generator_hinge", "get_gan_spec", "matching_aware_penalty", "mismatched_rows"]
