"""Caption encoders: encode(captions) -> token states [B, L, D], mask [B, L], pooled [B, D]; plus their disk cache."""

from .cache import CachedEmbedding, EmbeddingCache
from .encoder import ENCODERS, CaptionEncoder, EncoderNotFoundError, TextEncoding, masked_mean, resolve_encoder_path

__all__ = [
    "ENCODERS",
    "CachedEmbedding",
    "CaptionEncoder",
    "EmbeddingCache",
    "EncoderNotFoundError",
    "TextEncoding",
    "masked_mean",
    "resolve_encoder_path",
]
