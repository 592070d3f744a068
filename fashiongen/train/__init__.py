"""Training: set-up (setup.py), one loop (engine.py), a trainer per family in a registry (trainers.py); EMA, atomic
resumable checkpoints, run directories, export."""

from ..extras import require

require("accelerate", "train", "training")  # before the modules that import it, so that its absence is one line

from .checkpoint import CheckpointError, CheckpointWriteError, checkpoint_dirs, resolve_resume
from .diffusion import TrainingRun, compute_loss, export, save, train_step, validate
from .ema import EMA, ema_decay
from ..models.files import ModelFileError, read_info
from .engine import Trainer, TrainingOutOfMemory, run_training, training_failed
from .export import export_checkpoint, export_model
from .schedule import TrainingDiverged, TrainingStopped, lr_at
from .setup import resolve_training_config
from .trainers import TRAINERS, prepare, train
from ..runs import MetricsLog, create_run_dir, run_dirs

__all__ = [
    "CheckpointError", "CheckpointWriteError", "EMA", "MetricsLog", "ModelFileError", "TRAINERS", "Trainer",
    "TrainingDiverged", "TrainingOutOfMemory", "TrainingRun", "TrainingStopped", "checkpoint_dirs", "compute_loss",
    "create_run_dir", "ema_decay", "export", "export_checkpoint", "export_model", "lr_at", "prepare", "read_info",
    "resolve_resume", "resolve_training_config", "run_dirs", "run_training", "save", "train", "train_step", "training_failed", "validate",
]
