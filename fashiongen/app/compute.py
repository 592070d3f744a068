"""The app's compute thread: every torch computation a studio makes (its models' loading, sampling, product search)
runs on one long-lived thread of its own.

PyTorch's CPU kernels run on OpenMP, which keeps a team of worker threads per thread that calls into it. A server that
computes on one thread per request (and loaded its models on the main thread) soon has more OpenMP threads than cores;
libgomp then stops spinning between parallel regions (its throttled wait), and a UNet's hundreds of small regions each
pay for waking a sleeping worker. Measured on 2 cores, 3 student images at 256 px: 0.55 s on the thread that loaded the
model, 0.80 s on a second thread, and 0.65-0.69 s on the first one again once a second had computed. One compute
thread keeps the main thread's speed.

    compute = ComputeThread()
    pipelines = compute.run(load_models)           # app.py: the models are loaded there too
    demo = build_demo(pipelines, compute=compute)  # and the studio samples there
"""

from __future__ import annotations

import itertools
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, TypeVar

THREAD_NAME = "fashiongen-compute"
T = TypeVar("T")
_numbers = itertools.count(1)


class ComputeThread:
    """One worker thread; `run` waits for a call's result, `submit` does not. Calls made on the thread itself run in place
    (a job that needs another computation does not wait for itself)."""

    def __init__(self) -> None:
        self.name = f"{THREAD_NAME}-{next(_numbers)}"
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self.name)

    def on_it(self) -> bool:
        return threading.current_thread().name.startswith(self.name + "_")

    def submit(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> Future[T]:
        return self._executor.submit(function, *args, **kwargs)

    def run(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`function(*args, **kwargs)` on the thread; its exception is re-raised here."""
        if self.on_it():
            return function(*args, **kwargs)
        return self.submit(function, *args, **kwargs).result()

    def close(self) -> None:
        """No new calls; the running one finishes on its own."""
        self._executor.shutdown(wait=False, cancel_futures=True)


__all__ = ["THREAD_NAME", "ComputeThread"]
