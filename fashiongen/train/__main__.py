"""Export a checkpoint's EMA weights as a model the sampling pipeline loads; publish one as a complete model
folder (the same command as `python -m fashiongen.release`).

    python -m fashiongen.train critic configs/critic.yaml [key=value ...]   # the text-image critic evaluate.py scores with
    python -m fashiongen.train export runs/001-small64 [OUT] [--dtype float16]
    python -m fashiongen.train publish runs/001-default64 my-model/ --dtype float16 \\
        --report docs/default-model/report.json --notes docs/default-model/card-notes.md

OUT must be new, empty, or a model folder of ours (model.json or pipeline.json), which is replaced
atomically; anything else (a file, a folder of other files) is refused unless --overwrite. The
package's own default model (fashiongen/pretrained) is replaced only with --overwrite.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import release
from ..errors import ArgumentParser, command, input_errors
from ..models.files import DEFAULT_MODEL_DIR, DTYPES
from .checkpoint import resolve_resume
from .critic import critic_command as train_critic_command
from .export import export_checkpoint


@command(input_errors(OSError))
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m fashiongen.train", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="export a checkpoint's EMA model (safetensors + model.json)")
    export.add_argument("checkpoint", help="a checkpoint directory or a run directory (its latest checkpoint)")
    export.add_argument("out", nargs="?", help="output directory (default: RUN/export-step_NNNNNN)")
    export.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    export.add_argument("--overwrite", action="store_true", help="replace OUT even when it is not a model folder of ours")
    release.add_arguments(commands.add_parser("publish", help="a complete model folder: weights, model card, metrics, critic"))
    critic = commands.add_parser("critic", help="train the text-image critic (resumes from its critic.output_dir)")
    critic.add_argument("args", nargs="+", metavar="CONFIG_OR_OVERRIDE", help="YAML config files, then key.sub=value overrides")
    critic.add_argument("--quiet", action="store_true", help="no progress bar")
    options = parser.parse_args(argv)
    if options.command == "critic":
        return train_critic_command(options.args, show_progress=not options.quiet)
    if options.command == "publish":
        return release.run(options)
    checkpoint = resolve_resume(options.checkpoint, "", "")
    out = Path(options.out) if options.out else checkpoint.parent.parent / f"export-{checkpoint.name}"
    print(export_checkpoint(checkpoint, out, options.dtype, options.overwrite, (DEFAULT_MODEL_DIR,)))
    return 0

if __name__ == "__main__":
    sys.exit(main())
