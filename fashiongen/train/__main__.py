"""Export a checkpoint's EMA weights as a model the sampling pipeline loads.

    python -m fashiongen.train export runs/001-small64 [OUT] [--dtype float16]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config import ConfigError
from .checkpoint import resolve_resume
from .export import DTYPES, load_checkpoint_model, replace_directory, temporary_directory, write_model_files


def export_checkpoint(checkpoint: Path, out: Path, dtype: str = "float32") -> Path:
    """Export a checkpoint's EMA weights with the same model.json a finished run writes."""
    model, info = load_checkpoint_model(checkpoint)
    temporary = temporary_directory(out)
    write_model_files(model, {k: v for k, v in info.items() if k != "weights"}, temporary, dtype)
    return replace_directory(temporary, out)


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
