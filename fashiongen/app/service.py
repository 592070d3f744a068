"""The studio's old import path (`fashiongen.app.service`), kept for scripts that use it: the studio lives in
studio.py, its requests and their checks in checks.py, its tasks in tasks.py, the job streaming in compute.py."""

from .checks import ANY, ATTRIBUTES, MAX_SEED, EditRequest, GenerateRequest, InterpolateRequest, Limits
from .compute import PREVIEW_INTERVAL_S, JobCancelled
from .studio import Studio, model_names
from .tasks import FEW_STEPS, Update

__all__ = ["ANY", "ATTRIBUTES", "FEW_STEPS", "MAX_SEED", "PREVIEW_INTERVAL_S", "EditRequest", "GenerateRequest",
           "InterpolateRequest", "JobCancelled", "Limits", "Studio", "Update", "model_names"]
