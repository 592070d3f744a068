"""Export a checkpoint's EMA weights as a model the sampling pipeline loads.

    python -m fashiongen.train export runs/001-small64 [OUT] [--dtype float16]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from safetensors.torch import load_file

from ..config import ConfigError, load_config
from ..models import build_model
from .checkpoint import read_state, resolve_resume
from .export import DTYPES, export_model


def export_checkpoint(checkpoint: Path, out: Path, dtype: str = "float32") -> Path:
    """Rebuild the model from a checkpoint's config and state, load its EMA weights and export them."""
    config = load_config([checkpoint / "config.yaml"])
    state = read_state(checkpoint)
    model = build_model(config.model, config.data.resolution, state["text_dim"], state.get("attribute_vocab") or {})
    model.load_state_dict(load_file(checkpoint / "ema.safetensors"), strict=True)
    training = {"steps": state["step"], "images_seen": state.get("images_seen"), "run": checkpoint.parent.parent.name,
                "num_processes": state.get("num_processes"), "images_per_step": state.get("images_per_step")}
    return export_model(model, config, state["text_identity"], out, dtype=dtype, training=training)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fashiongen.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="export a checkpoint's EMA model (safetensors + model.json)")
    export.add_argument("checkpoint", help="a checkpoint directory or a run directory (its latest checkpoint)")
    export.add_argument("out", nargs="?", help="output directory (default: RUN/export-step_NNNNNN)")
    export.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    options = parser.parse_args(argv)
    try:
        checkpoint = resolve_resume(options.checkpoint, "", "")
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    out = Path(options.out) if options.out else checkpoint.parent.parent / f"export-{checkpoint.name}"
    print(export_checkpoint(checkpoint, out, options.dtype))
    return 0


if __name__ == "__main__":
    sys.exit(main())
