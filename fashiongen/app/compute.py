"""The app's compute worker: every torch computation a studio makes (its models' loading, sampling, product search)
runs on one long-lived thread of its own, and `Jobs` streams what a job on it reports and stops it when cancelled.

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

import contextlib
import functools
import itertools
import queue
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Callable, TypeVar

THREAD_NAME = "fashiongen-compute"
PREVIEW_INTERVAL_S = 1.0  # the first preview at once, then at most one a second: each page update costs CPU the
# sampler would otherwise use (0.2 s made a 4-image request 1.32x slower than 1 s on 2 cores; benchmarks/README.md)
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


class JobCancelled(Exception):
    """Raised inside the worker at the next sampling step after a cancel."""


Report = Callable[[str, Any], None]  # a job's way to hand ("preview" | "image" | ..., value) to the page's thread


class Jobs:
    """The running jobs of every visitor: each runs on the compute thread (or, with `concurrency` > 1, a thread of its
    own), streams what it reports, and stops at its next step when its visitor cancels or leaves."""

    def __init__(self, compute: ComputeThread, concurrency: int = 1) -> None:
        self.compute = compute
        self.concurrency = concurrency  # model jobs at once: 1 runs them all on the compute thread
        self._running: dict[str, set[threading.Event]] = {}
        self._lock = threading.Lock()

    def cancel(self, session: str) -> int:
        """Stop every running job of a session at its next sampling step; returns how many were running."""
        with self._lock:
            events = list(self._running.get(session, ()))
        for event in events:
            event.set()
        return len(events)

    def stream(self, session: str, work: Callable[[Report], Any]) -> Iterator[tuple[str, Any]]:
        """Run `work(report)` in a worker thread and yield what it reports, then ("done", its result).

        Previews are thinned: when the page falls behind, only the newest preview is yielded. Closing this
        iterator (the visitor left, or pressed Stop) or `cancel(session)` stops the worker at its next step.
        """
        stop = threading.Event()
        with self._lock:
            self._running.setdefault(session, set()).add(stop)
        events: queue.Queue[tuple[str, Any]] = queue.Queue()

        def report(kind: str, value: Any) -> None:
            if stop.is_set():
                raise JobCancelled
            events.put((kind, value))

        def target() -> None:
            try:
                events.put(("done", work(report)))
            except JobCancelled:
                events.put(("cancelled", None))
            except BaseException as error:  # handed to the page's thread, which turns it into a message
                events.put(("error", error))

        finish = self._start(target, session)
        try:
            yield from _thinned(events)
        finally:
            stop.set()
            finish()  # at most one sampling step, so the next queued job gets the cores
            with self._lock:
                self._running.get(session, set()).discard(stop)
                if not self._running.get(session):
                    self._running.pop(session, None)

    def _start(self, target: Callable[[], None], session: str) -> Callable[[], Any]:
        """Start `target`; returns what waits for it to end."""
        # on the app's one compute thread (a thread per job made every forward ~40% slower on a CPU);
        # with more than one job at a time (a GPU server's --concurrency) a thread of its own
        if self.concurrency == 1:
            return functools.partial(_wait, self.compute.submit(target))
        worker = threading.Thread(target=target, name=f"fashiongen-job-{session[:8]}", daemon=True)
        worker.start()
        return functools.partial(worker.join, timeout=30)


def _thinned(events: queue.Queue[tuple[str, Any]]) -> Iterator[tuple[str, Any]]:
    """A job's reports until it is done or cancelled, skipping previews the page has no time for; an error is raised."""
    last_preview = 0.0
    pending: deque[tuple[str, Any]] = deque()
    while True:
        if not pending:
            pending.append(events.get())
        pending.extend(_drain(events))
        kind, value = pending.popleft()
        if kind == "preview":
            if pending and pending[0][0] == "preview":
                continue  # a newer preview is already waiting
            if time.monotonic() - last_preview < PREVIEW_INTERVAL_S:
                continue
            last_preview = time.monotonic()
        if kind == "error":
            raise value
        yield kind, value
        if kind in ("done", "cancelled"):
            return


def _drain(events: queue.Queue[tuple[str, Any]]) -> list[tuple[str, Any]]:
    items = []
    while True:
        try:
            items.append(events.get_nowait())
        except queue.Empty:
            return items


def _wait(job: Future[Any], timeout: float = 30) -> None:
    """Wait for a job on the compute thread to finish (it stops at its next step once cancelled); its outcome was
    already reported through the job's queue."""
    with contextlib.suppress(FutureTimeout):
        job.result(timeout=timeout)


__all__ = ["PREVIEW_INTERVAL_S", "THREAD_NAME", "ComputeThread", "JobCancelled", "Jobs", "Report"]
