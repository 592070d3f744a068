"""Train a caption-conditioned diffusion model.

    python train.py configs/small64.yaml [key=value ...] [--resume latest|RUN_DIR|CHECKPOINT]
    accelerate launch --multi_gpu --num_processes 4 train.py configs/small64.yaml train.batch_size=64
"""

from __future__ import annotations

import argparse
import logging
import sys

from fashiongen.config import ConfigError, split_cli_args
from fashiongen.data import DataError
from fashiongen.train import (
    CheckpointWriteError,
    ModelFileError,
    TrainingDiverged,
    TrainingOutOfMemory,
    TrainingStopped,
    prepare,
    resolve_training_config,
    train,
)
from fashiongen.utils import DISK_ERRORS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("args", nargs="*", help="YAML config files, then key.sub=value overrides")
    parser.add_argument("--resume", help="'latest' (newest checkpoint of the newest run with this config's name), "
                                         "a run directory or a checkpoint directory")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    options = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("accelerate").setLevel(logging.WARNING)  # it logs every file of every checkpoint
    paths, overrides = split_cli_args(options.args)
    try:
        config, checkpoint = resolve_training_config(paths, overrides, options.resume)
        run = prepare(config, resume=checkpoint, show_progress=not options.quiet)
        run_dir = train(run, show_progress=not options.quiet)
    except (ConfigError, DataError, ModelFileError, CheckpointWriteError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        if error.errno not in DISK_ERRORS:
            raise
        print(f"error: {error.filename or error.filename2 or ''}: {DISK_ERRORS[error.errno]} ({error.strerror})", file=sys.stderr)
        return 2
    except (TrainingDiverged, TrainingOutOfMemory) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except RuntimeError as error:
        if "DataLoader worker" not in str(error):
            raise
        reason = str(error).strip().splitlines()[0].rstrip(".")  # torch: "DataLoader worker (pid(s) N) exited unexpectedly" / "is killed by signal"
        print(f"error: {reason}; a worker killed for memory is the usual cause: lower train.num_workers or "
              "train.batch_size, then resume with --resume latest", file=sys.stderr)
        return 1
    except TrainingStopped as stopped:
        print(str(stopped), file=sys.stderr)
        return stopped.exit_code
    if run.accelerator.is_main_process:
        print(f"finished: {run_dir} (exported model: {run_dir / 'export'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
