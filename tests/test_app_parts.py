"""The app's parts without a model or a server: the compute worker's jobs (streaming, cancelling, errors) and the live
regeneration's debounce (one generation per burst of changes)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Iterator

import gradio as gr
import pytest

from fashiongen.app.compute import ComputeThread, Jobs, Report
from fashiongen.app.ui.live import LIVE_DEBOUNCE_S, LiveRegeneration


@pytest.fixture
def jobs() -> Iterator[Jobs]:
    compute = ComputeThread()
    yield Jobs(compute)
    compute.close()


def test_a_job_streams_what_it_reports_on_the_compute_thread_then_its_result(jobs: Jobs) -> None:
    def work(report: Report) -> list[str]:
        report("image", threading.current_thread().name)
        return ["a", "b"]

    events = list(jobs.stream("visitor", work))
    assert events[0][0] == "image" and events[0][1].startswith(jobs.compute.name)
    assert events[-1] == ("done", ["a", "b"])
    assert jobs.cancel("visitor") == 0  # finished: nothing of the visitor's is running


def test_an_error_in_a_job_is_raised_where_its_updates_are_read(jobs: Jobs) -> None:
    def work(report: Report) -> None:
        raise ValueError("the sampler failed")

    with pytest.raises(ValueError, match="the sampler failed"):
        list(jobs.stream("visitor", work))


def test_cancel_stops_a_job_at_its_next_report_and_only_that_visitors(jobs: Jobs) -> None:
    started, cancelled = threading.Event(), threading.Event()

    def work(report: Report) -> int:
        report("image", 0)
        started.set()
        cancelled.wait(10)
        report("image", 1)  # raises: cancelled
        return 2

    stream = jobs.stream("visitor", work)
    assert next(stream) == ("image", 0)
    started.wait(10)
    assert jobs.cancel("someone else") == 0
    assert jobs.cancel("visitor") == 1
    cancelled.set()
    assert list(stream) == [("cancelled", None)]
    assert jobs.cancel("visitor") == 0


def test_closing_the_stream_stops_the_job(jobs: Jobs) -> None:
    reports: list[int] = []

    def work(report: Report) -> None:
        for number in range(1000):
            report("image", number)
            reports.append(number)
            threading.Event().wait(0.005)

    stream = jobs.stream("visitor", work)
    next(stream)
    stream.close()  # the visitor left: the worker stops at its next report, and the stream waits for it
    stopped_at = len(reports)
    threading.Event().wait(0.1)
    assert len(reports) == stopped_at < 1000 and jobs.cancel("visitor") == 0


def test_live_regeneration_generates_once_for_a_burst_of_changes() -> None:
    calls: list[tuple[Any, ...]] = []

    def generate(*args: Any, **kwargs: Any) -> Iterator[tuple[Any, ...]]:
        calls.append(args)
        yield ("images", "status", "files", args[10])

    live = LiveRegeneration(generate, is_live=lambda model: model == "gan")
    request = None  # one visitor: "local"

    async def burst() -> list[Any]:
        first = asyncio.create_task(live.live_tick(True, "gan", request))
        await asyncio.sleep(LIVE_DEBOUNCE_S / 3)  # the next change comes while the first still waits
        return list(await asyncio.gather(first, live.live_tick(True, "gan", request)))

    first, last = asyncio.run(burst())
    assert not isinstance(first, int) and isinstance(last, int)  # the earlier change was overtaken: no token
    assert not isinstance(asyncio.run(live.live_tick(True, "diffusion", request)), int)  # not a live model
    assert not isinstance(asyncio.run(live.live_tick(False, "gan", request)), int)  # Live is off
    values = ["red dress", "", "any", "any", "any", "any", 4, 1, 3.0, "one-step", 7, True, "gan", 0.8]
    assert list(live.live_generate(*values, last, request)) == [("images", "status", "files", 7)]
    assert calls[0][11] is False  # the seed stays put: never a random one while typing
    skipped = list(live.live_generate(*values, last, request))  # the burst's other followers: nothing new
    assert len(calls) == 1 and len(skipped) == 1 and not isinstance(skipped[0][0], str)


def test_a_burst_s_last_follower_waits_for_the_pending_one_instead_of_being_dropped() -> None:
    # Gradio's default for a .then is "once": the page drops a follower while the one before is pending, and on a
    # loaded machine that was the burst's last follower, the one carrying the new token (no live generation at all)
    live = LiveRegeneration(lambda *args, **kwargs: iter(()), is_live=lambda model: True)
    with gr.Blocks() as demo:
        description, checkbox, model, token = gr.Textbox(), gr.Checkbox(), gr.Radio(["gan"]), gr.State(0)
        live.wire([description.input], checkbox, model, token, [description] * 14, [description], concurrency=1)
    modes = {dep["trigger_mode"] for dep in demo.config["dependencies"] if dep["queue"] is False}
    followers = {dep["trigger_mode"] for dep in demo.config["dependencies"] if dep["queue"] is not False}
    assert modes == {"multiple"} and followers == {"always_last"}
