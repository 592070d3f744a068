"""The product index built in the background, so the app serves at once on a new machine.

Embedding the 9,116 bundled products takes over a minute on two cores the first time (later starts read the cache):
a page that does not load for a minute looks broken. The app starts serving at once; a thread of its own reads and
resizes the photos and hands each batch's torch work to the app's compute thread (app/compute.py), so a designer's
request waits for at most one batch. Until the index is ready the Nearest products tab says how far it is, and a
search is refused with that sentence.

    products = BackgroundIndex(lambda progress: ProductIndex.build(source, progress=progress, run=compute.run))
    products.status()          # "Indexing the real products: 2,304 of 9,116 photos embedded..."
    products.get()             # the ProductIndex once ready; PipelineInputError before (or if it failed)
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from ..errors import one_line
from ..settings import PipelineInputError
from .products import Progress, ProductIndex

logger = logging.getLogger("fashiongen.app")
BATCH_SIZE = 64  # photos a batch: the longest a designer's request waits behind the index (~1 s on two cores)


class BackgroundIndex:
    """A ProductIndex being built on a daemon thread; `get` returns it once built."""

    def __init__(self, build: Callable[[Progress], ProductIndex], name: str = "the real products", start: bool = True
                 ) -> None:
        self.name = name
        self._build = build
        self._lock = threading.Lock()
        self._done, self._total = 0, 0
        self._index: ProductIndex | None = None
        self._failure = ""
        self._finished = threading.Event()
        self._started = False
        self._thread = threading.Thread(target=self._run, name="fashiongen-products", daemon=True)
        if start:
            self.start()

    def start(self) -> None:
        """Begin the build (app.py: once the server answers, so reading the photos does not slow its start)."""
        with self._lock:
            if self._started:
                return
            self._started = True
        self._thread.start()

    def _progress(self, done: int, total: int) -> None:
        with self._lock:
            self._done, self._total = done, total

    def _run(self) -> None:
        try:
            index = self._build(self._progress)
            with self._lock:
                self._index = index
        except Exception as error:  # the app keeps serving without the tab's search; the log keeps the traceback
            logger.exception("building the product index failed")
            with self._lock:
                self._failure = one_line(error)
        finally:
            self._finished.set()

    @property
    def ready(self) -> bool:
        return self._index is not None

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the build ends (built or failed); whether it ended within `timeout` seconds."""
        return self._finished.wait(timeout)

    def status(self) -> str:
        """One sentence on the index for the Nearest products tab."""
        with self._lock:
            index, failure, done, total = self._index, self._failure, self._done, self._total
        if index is not None:
            return (f"Searches {len(index):,} real training products by the critic network's image embedding, so you "
                    "can see whether a design is new.")
        if failure:
            return f"The product index could not be built ({failure}); the other tabs work as usual."
        counted = f": {done:,} of {total:,} photos embedded" if total else ""
        return (f"Indexing {self.name}{counted}. Generate, Interpolate and Edit work meanwhile; this tab searches "
                "once the index is ready (later starts read it from the cache).")

    def get(self) -> ProductIndex:
        """The built index; PipelineInputError naming how far the build is (or why it failed) before then."""
        with self._lock:
            index = self._index
        if index is None:
            raise PipelineInputError(self.status())
        return index


__all__ = ["BATCH_SIZE", "BackgroundIndex"]
