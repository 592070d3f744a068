"""Train a caption-conditioned diffusion model.

    python train.py configs/small64.yaml [key=value ...] [--resume latest|RUN_DIR|CHECKPOINT]
    accelerate launch --multi_gpu --num_processes 4 train.py configs/small64.yaml train.batch_size=64
"""

from __future__ import annotations

import argparse
import logging
import sys

from fashiongen.config import split_cli_args
from fashiongen.errors import ArgumentParser, Ending, command
from fashiongen.train import prepare, resolve_training_config, train, training_failed
from fashiongen.utils import DISK_ERRORS


def disk_full(error: Exception) -> Ending | None:
    """A full disk or a quota while writing a checkpoint or the export: `error: FILE: reason (strerror)`, exit 2."""
    if isinstance(error, OSError) and error.errno in DISK_ERRORS:
        where = error.filename or error.filename2 or ""
        return Ending(f"error: {where}: {DISK_ERRORS[error.errno]} ({error.strerror})", 2)
    return None


@command(disk_full, training_failed)
def main(argv: list[str] | None = None) -> int:
    """Bad config, data or model files: one `error:` line, exit 2; a stop signal: its line and 128 + the signal."""
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("args", nargs="*", help="YAML config files, then key.sub=value overrides")
    parser.add_argument("--resume", help="'latest' (newest checkpoint of the newest run with this config's name), "
                                         "a run directory or a checkpoint directory")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    options = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("accelerate").setLevel(logging.WARNING)  # it logs every file of every checkpoint
    paths, overrides = split_cli_args(options.args)
    config, checkpoint = resolve_training_config(paths, overrides, options.resume)
    run = prepare(config, resume=checkpoint, show_progress=not options.quiet)
    run_dir = train(run, show_progress=not options.quiet)
    if run.accelerator.is_main_process:
        print(f"finished: {run_dir} (exported model: {run_dir / 'export'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
