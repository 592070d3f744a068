"""The caption encoder cut down to what a training run's captions need, as a Hugging Face folder that travels.

MiniLM-L6 is 22.7M parameters (88 MB installed); half of them are its 30522-token word-embedding table, and our
captions use a few thousand of those tokens. The cut folder keeps the used rows only (a vocab.txt of those tokens in
a new order, so the tokenizer itself emits the new ids), position embeddings up to text.max_length, and every
weight in float16 (~21 MiB). WordPiece is greedy longest-match-first, and every piece it chose for our captions is
kept, so the cut tokenizer splits our captions exactly as the full one: `check_cut_encoder` proves the ids equal and
measures how far the cut encoder's states are from the full one's (float16 weights: 4.3e-3).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..config import TextConfig
from ..errors import UserError
from ..text import CaptionEncoder
from ..text.encoder import resolve_encoder_path

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
STATE_TOLERANCE = 1e-2  # max |cut - full| over token states and pooled vectors; float16 weights: 4.3e-3 on ours


class EncoderCutError(UserError):
    """The encoder is not one the kit can cut (not a BERT-style WordPiece model), or the cut one disagrees."""


def _vocabulary(path: Path) -> list[str]:
    return (path / "vocab.txt").read_text(encoding="utf-8").splitlines()


def used_token_ids(encoder: CaptionEncoder, captions: Sequence[str]) -> list[int]:
    """Sorted ids the full tokenizer gives `captions` (at text.max_length), the special tokens included."""
    tokenizer = encoder.tokenizer
    used = {tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    for start in range(0, len(captions), 1024):
        batch = list(captions[start : start + 1024])
        for ids in tokenizer(batch, truncation=True, max_length=encoder.max_length)["input_ids"]:
            used.update(ids)
    return sorted(used)


def cut_encoder(text: TextConfig, captions: Sequence[str], out: Path) -> dict:
    """Write the cut encoder into `out` (a Hugging Face BERT folder); returns what it kept."""
    source = resolve_encoder_path(text.encoder)
    full = CaptionEncoder(dataclasses.replace(text, cache_dir="", device="cpu"))
    if full.model_type != "bert" or not (source / "vocab.txt").is_file():
        raise EncoderCutError(f"text.encoder {text.encoder}: the kit cuts BERT-style WordPiece encoders (vocab.txt); "
                              f"this one is '{full.model_type}'")
    vocabulary = _vocabulary(source)
    kept = used_token_ids(full, list(captions))
    weights = load_file(source / "model.safetensors")
    weights.pop("embeddings.position_ids", None)
    weights["embeddings.word_embeddings.weight"] = weights["embeddings.word_embeddings.weight"][kept]
    weights["embeddings.position_embeddings.weight"] = weights["embeddings.position_embeddings.weight"][: text.max_length]
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.to(torch.float16).contiguous() for k, v in weights.items()}, out / "model.safetensors")
    config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    config.update(vocab_size=len(kept), max_position_embeddings=text.max_length, pad_token_id=0)
    (out / "config.json").write_text(json.dumps(config, indent=1) + "\n", encoding="utf-8")
    (out / "vocab.txt").write_text("".join(vocabulary[i] + "\n" for i in kept), encoding="utf-8")
    tokenizer_config = {"do_lower_case": getattr(full.tokenizer, "do_lower_case", True), "tokenizer_class": "BertTokenizer",
                        "model_max_length": text.max_length, "unk_token": "[UNK]", "sep_token": "[SEP]",
                        "pad_token": "[PAD]", "cls_token": "[CLS]", "mask_token": "[MASK]"}
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=1) + "\n", encoding="utf-8")
    return {"source": str(source), "full_identity": full.identity, "tokens_kept": len(kept),
            "tokens_full": len(vocabulary), "old_ids": kept}


def check_cut_encoder(text: TextConfig, cut: Path, captions: Sequence[str], old_ids: list[int],
                      sample: int = 256) -> dict:
    """Tokenise every caption with both tokenizers (ids must map back exactly) and encode an evenly spaced sample
    with both models: the largest state difference, refused above STATE_TOLERANCE."""
    full = CaptionEncoder(dataclasses.replace(text, cache_dir="", device="cpu"))
    small = CaptionEncoder(dataclasses.replace(text, encoder=str(cut), cache_dir="", device="cpu"))
    captions = list(captions)
    for start in range(0, len(captions), 1024):
        batch = captions[start : start + 1024]
        expected = full.tokenizer(batch, truncation=True, max_length=text.max_length)["input_ids"]
        got = small.tokenizer(batch, truncation=True, max_length=text.max_length)["input_ids"]
        for caption, want, have in zip(batch, expected, got):
            if [old_ids[i] for i in have] != want:
                raise EncoderCutError(f"the cut tokenizer splits {caption!r} differently from {text.encoder}'s")
    picks = sorted({round(i * (len(captions) - 1) / max(sample - 1, 1)) for i in range(min(sample, len(captions)))})
    chosen = [captions[i] for i in picks]
    worst = 0.0
    for start in range(0, len(chosen), 64):
        a, b = full.encode(chosen[start : start + 64]), small.encode(chosen[start : start + 64])
        if not torch.equal(a.mask, b.mask):
            raise EncoderCutError("the cut encoder's masks differ from the full encoder's")
        worst = max(worst, float((a.token_states - b.token_states).abs().max()), float((a.pooled - b.pooled).abs().max()))
    if worst > STATE_TOLERANCE:
        raise EncoderCutError(f"the cut encoder's states differ from {text.encoder}'s by {worst:.3g} "
                              f"(> {STATE_TOLERANCE}); the kit cannot stand in for it")
    return {"captions_tokenised": len(captions), "captions_encoded": len(chosen), "max_abs_state_difference": worst,
            "tolerance": STATE_TOLERANCE, "full_identity": full.identity, "cut_identity": small.identity}


WEIGHTS, PACKED = "model.safetensors", "model.safetensors.shuffled.zlib"


def pack_weights(folder: Path) -> dict:
    """Replace the folder's float16 weights by their bytes shuffled (every weight's high bytes, then its low bytes:
    the exponents compress) and deflated: 22.6 -> 19.5 MiB for the cut MiniLM. Returns the original's size/sha256."""
    raw = (folder / WEIGHTS).read_bytes()
    padded = np.frombuffer(raw + b"\0" * (len(raw) % 2), dtype=np.uint8).reshape(-1, 2)
    (folder / PACKED).write_bytes(zlib.compress(padded.T.tobytes(), 9))
    (folder / WEIGHTS).unlink()
    return {"weights_bytes": len(raw), "weights_sha256": hashlib.sha256(raw).hexdigest()}


def unpack_weights(folder: Path, out: Path, expected: dict) -> Path:
    """A loadable copy of a packed encoder folder in `out`; its weights' bytes checked against `expected`."""
    try:
        shuffled = np.frombuffer(zlib.decompress((folder / PACKED).read_bytes()), dtype=np.uint8)
    except (OSError, zlib.error) as error:
        raise EncoderCutError(f"{folder / PACKED}: cannot be read ({error}); run `prepare` again") from None
    raw = shuffled.reshape(2, -1).T.tobytes()[: expected["weights_bytes"]]
    if hashlib.sha256(raw).hexdigest() != expected["weights_sha256"]:
        raise EncoderCutError(f"{folder / PACKED}: its weights are not the ones `prepare` wrote (damaged or from another kit)")
    out.mkdir(parents=True, exist_ok=True)
    for file in folder.iterdir():
        if file.name != PACKED:
            (out / file.name).write_bytes(file.read_bytes())
    (out / WEIGHTS).write_bytes(raw)
    return out


__all__ = ["EncoderCutError", "STATE_TOLERANCE", "check_cut_encoder", "cut_encoder", "pack_weights", "unpack_weights",
           "used_token_ids"]
