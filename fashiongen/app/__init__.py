"""The designer-facing Gradio app (`python app.py`): `build_demo(pipeline, neighbours)` in ui.py, the request
handling it wraps in service.py, and the real-product search of the Nearest products tab in products.py."""

from ..extras import require

require("gradio", "app", "the app")  # before the modules that import it, so that its absence is one line

from .products import Product, ProductIndex  # noqa: E402
from .service import EditRequest, GenerateRequest, InterpolateRequest, Limits, Studio, Update, model_names  # noqa: E402
from .ui import build_demo  # noqa: E402

__all__ = ["EditRequest", "GenerateRequest", "InterpolateRequest", "Limits", "Product", "ProductIndex", "Studio", "Update", "model_names",
           "build_demo"]
