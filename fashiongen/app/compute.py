"""The app's compute thread: every torch computation the app makes (loading its models, sampling, product search) runs
on one long-lived thread.

PyTorch's CPU kernels run on OpenMP, which keeps a team of worker threads per thread that calls into it. A server that
computes on one thread per request (and loaded its models on the main thread) soon has more OpenMP threads than cores;
libgomp then stops spinning between parallel regions (its throttled wait), and a UNet's hundreds of small regions each
pay for waking a sleeping worker. Measured on 2 cores, 3 student images at 256 px: 0.55 s on the thread that loaded the
model, 0.80 s on a second thread, and 0.65-0.69 s on the first one again once a second had computed. One compute
thread keeps the main thread's speed.

    pipelines = on_compute_thread(load_models)   # app.py: the models are loaded there too
    future = compute_executor().submit(work)      # Studio._stream: a job's sampling
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, TypeVar

THREAD_NAME = "fashiongen-compute"
_executor: ThreadPoolExecutor | None = None
_lock = threading.Lock()
T = TypeVar("T")


def compute_executor() -> ThreadPoolExecutor:
    """The process's one compute thread (created on first use, a daemon-like worker that lives as long as the process)."""
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=THREAD_NAME)
        return _executor


def on_compute_thread(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`function(*args, **kwargs)` run on the compute thread (directly when already there); its exception is re-raised."""
    if threading.current_thread().name.startswith(THREAD_NAME):
        return function(*args, **kwargs)
    return compute_executor().submit(function, *args, **kwargs).result()


def submit(function: Callable[..., T], *args: Any) -> Future[T]:
    return compute_executor().submit(function, *args)


__all__ = ["THREAD_NAME", "compute_executor", "on_compute_thread", "submit"]
