"""The upsampler family: a one-step 4x super-resolution stage (64 -> 256 px) after a base model, its patch
discriminator, its losses and the degradations that make its training inputs."""

from .degrade import Degradation, degrade, downsample
from .losses import feature_matching, patch_generator, patch_hinge, reconstruction
from .networks import (UPSAMPLERS, PatchDiscriminator, Upsampler, UpsamplerSpec, back_project, check_upsampler_description,
                       get_upsampler_spec)

__all__ = ["Degradation", "PatchDiscriminator", "UPSAMPLERS", "Upsampler", "UpsamplerSpec", "back_project",
           "check_upsampler_description", "degrade", "downsample", "feature_matching", "get_upsampler_spec", "patch_generator", "patch_hinge",
           "reconstruction"]
