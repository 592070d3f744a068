"""The designer-facing Gradio app (`python app.py`), by concern:

    requests.py  the page's field table: builds every input and refuses a bad value before Gradio reads it
    checks.py    the studio's requests and their checks against the chosen model; the app's limits
    compute.py   the compute worker: one thread for every torch computation; jobs that stream and can be cancelled
    tasks.py     generate, interpolate, edit: check, run on the worker with previews, save the downloads
    studio.py    Studio: the loaded models, what the page shows of each, a request sent to its model and task
    uploads.py   uploaded images read within the limits; the photo editor's photo and mask
    products.py  the real-product search of the Nearest products tab
    ui/          build_demo: one module per tab, the shared page, live regeneration
"""

from ..extras import require

require("gradio", "app", "the app")  # before the modules that import it, so that its absence is one line

from .checks import EditRequest, GenerateRequest, InterpolateRequest, Limits  # noqa: E402
from .products import Product, ProductIndex  # noqa: E402
from .studio import Studio, model_names  # noqa: E402
from .tasks import Update  # noqa: E402
from .ui import build_demo  # noqa: E402

__all__ = ["EditRequest", "GenerateRequest", "InterpolateRequest", "Limits", "Product", "ProductIndex", "Studio", "Update", "model_names",
           "build_demo"]
