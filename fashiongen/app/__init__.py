"""The designer-facing Gradio app (`python app.py`): `build_demo(pipeline, neighbours)` in ui.py, the request
handling it wraps in service.py, and the real-product search of the Nearest products tab in products.py."""

from .products import Product, ProductIndex
from .service import EditRequest, GenerateRequest, InterpolateRequest, Limits, Studio, Update, model_names
from .ui import build_demo

__all__ = ["EditRequest", "GenerateRequest", "InterpolateRequest", "Limits", "Product", "ProductIndex", "Studio", "Update", "model_names",
           "build_demo"]
