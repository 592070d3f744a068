"""The diffusion trainer's old module path, kept so that `from fashiongen.train.loop import ...` keeps working: the
trainer is now fashiongen/train/diffusion.py, the loop engine.py, the shared set-up setup.py."""

from .data import precompute_captions
from .diffusion import TrainingRun, check_config, compute_loss, export, save, train_step, validate
from .engine import TrainingOutOfMemory
from .schedule import TrainingDiverged, TrainingStopped, lr_at
from .setup import open_encoder, resolve_training_config
from .trainers import prepare, train

__all__ = ["TrainingDiverged", "TrainingOutOfMemory", "TrainingRun", "TrainingStopped", "check_config", "compute_loss",
           "export", "lr_at", "open_encoder", "precompute_captions", "prepare", "resolve_training_config", "save", "train",
           "train_step", "validate"]
