"""`unpack`, here: the pieces a GPU run sent back, joined (checksums verified) into a model folder the pipeline loads.

The run trained with the cut caption encoder (encoder.py), so its model.json names that one; unpack names the full
encoder the kit was cut from instead, after checking that this machine's encoder is that very one (same identity),
and records the kit's facts (the state difference the kit measured, the run's results) in model.json's training.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

from ..config import TextConfig
from ..errors import UserError
from ..families import load_generator
from ..models.files import replacing_directory
from ..text import CaptionEncoder
from .pieces import join_pieces
from .run import RESULTS


class UnpackError(UserError):
    """A returned folder that cannot become a model (no results, a kit of another encoder, an existing output)."""


def next_run_folder(runs: Path) -> Path:
    """runs/gpu-NNN, one more than the highest there."""
    numbers = [int(m.group(1)) for p in runs.glob("gpu-*") if (m := re.fullmatch(r"gpu-(\d+)", p.name))]
    return runs / f"gpu-{max(numbers, default=0) + 1:03d}"


def _results(folder: Path) -> dict[str, Any]:
    try:
        results = json.loads((folder / RESULTS).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UnpackError(f"{folder / RESULTS}: unreadable ({error}); not the --out folder of a GPU run") from None
    if not isinstance(results, dict) or not isinstance(results.get("kit_encoder"), dict):
        raise UnpackError(f"{folder / RESULTS}: has no kit_encoder section; not written by `python -m fashiongen.gpu run`")
    return results


def unpack(folder: Path, out: Path) -> Path:
    """Join, rename the encoder to the full one, write `out` (which must not exist)."""
    if out.exists():
        raise UnpackError(f"{out}: exists; pass another --to (unpack never replaces a model folder)")
    results = _results(folder)
    kit = results["kit_encoder"]
    with tempfile.TemporaryDirectory() as scratch:
        manifest = join_pieces(folder, Path(scratch), run_id=results.get("kit"))  # pieces of this run's kit only
        generator = load_generator(scratch)
    raw = generator.info.to_dict()
    text = dict(raw["text"])
    full = CaptionEncoder(TextConfig(encoder=kit["encoder"], max_length=int(text["max_length"]),
                                     dtype=str(text.get("dtype", "float32")),
                                     normalize_pooled=bool(text["normalize_pooled"]), cache_dir=""))
    if full.identity != kit["full_identity"]:
        raise UnpackError(f"the kit was cut from caption encoder {kit['full_identity']}; this machine's "
                          f"'{kit['encoder']}' is {full.identity}: the model would be used with other states")
    config = dict(raw.get("config") or {})
    config["text"] = {**config.get("text", {}), "encoder": kit["encoder"], "cache_dir": TextConfig().cache_dir, "device": "cpu"}
    config["data"] = {**config.get("data", {}), "source": kit["data_source"]}
    training = {**raw.get("training", {}), "gpu_kit": {
        "kit": results.get("kit"), "step": manifest.get("step"), "environment": results.get("environment"),
        "trained_with_encoder": text["identity"], "max_abs_state_difference": kit["max_abs_state_difference"],
        "training": results.get("training")}}
    generator.info = generator.info.replace(text={**text, "encoder": kit["encoder"], "identity": full.identity},
                                            config=config, training=training)
    with replacing_directory(out, False) as temporary:
        generator.write(temporary, "float16")
    return out


__all__ = ["UnpackError", "next_run_folder", "unpack"]
