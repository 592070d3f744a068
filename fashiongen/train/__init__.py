"""Training: the loop in named steps, EMA, atomic resumable checkpoints, run directories, export."""

from ..extras import require

require("accelerate", "train", "training")  # before the modules that import it, so that its absence is one line

from .checkpoint import CheckpointError, CheckpointWriteError, checkpoint_dirs, resolve_resume
from .ema import EMA, ema_decay
from ..models.files import ModelFileError, read_info
from .export import export_checkpoint, export_model
from .loop import (
    TrainingDiverged,
    TrainingOutOfMemory,
    TrainingRun,
    TrainingStopped,
    compute_loss,
    export,
    lr_at,
    prepare,
    resolve_training_config,
    save,
    train,
    train_step,
    validate,
)
from ..runs import MetricsLog, create_run_dir, run_dirs

__all__ = [
    "CheckpointError", "CheckpointWriteError", "EMA", "MetricsLog", "ModelFileError", "TrainingDiverged", "TrainingOutOfMemory", "TrainingRun", "TrainingStopped", "checkpoint_dirs",
    "compute_loss", "create_run_dir", "ema_decay", "export", "export_checkpoint", "export_model", "lr_at", "prepare",
    "read_info", "resolve_resume", "resolve_training_config", "run_dirs", "save", "train", "train_step", "validate",
]
