"""Caption encoders: encode(captions) -> token states [B, L, D], mask [B, L], pooled [B, D]; plus their disk cache and
the memory-mapped states of a run's captions."""

from .cache import CachedEmbedding, EmbeddingCache
from .encoder import ENCODERS, CaptionEncoder, EncoderNotFoundError, TextEncoding, masked_mean, resolve_encoder_path
from .states import CaptionStates, StatesFileError, resident_states

__all__ = [
    "ENCODERS",
    "CachedEmbedding",
    "CaptionEncoder",
    "CaptionStates",
    "EmbeddingCache",
    "EncoderNotFoundError",
    "StatesFileError",
    "TextEncoding",
    "masked_mean",
    "resident_states",
    "resolve_encoder_path",
]
