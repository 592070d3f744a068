"""Live regeneration: a one-forward model (a GAN) regenerates as the description, an attribute, the seed or a slider
changes. Changes are debounced (LIVE_DEBOUNCE_S after the last one) and only the newest waits while one runs.

    live = LiveRegeneration(generate, is_live=lambda model: controls(model)["live"])
    events = live.wire(triggers, live_checkbox, model, live_token, generate_inputs, outputs, concurrency)

Each change first runs `live_tick` (outside the queue: it only waits and hands out a token), then `live_generate`
in the model jobs' queue, which generates once per new token with the page's values as they are by then.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Callable, Iterator
from typing import Any

import gradio as gr

from .page import MODEL_JOBS, session_of

LIVE_DEBOUNCE_S = 0.3  # live regeneration starts this long after the last change (typing pauses are longer)


class LiveRegeneration:
    """The page's live regeneration for every visitor: `generate` is the Generate tab's handler, `is_live(model)` says
    whether a model is fast enough for it."""

    def __init__(self, generate: Callable[..., Iterator[tuple[Any, ...]]], is_live: Callable[[str | None], bool]) -> None:
        self.generate = generate
        self.is_live = is_live
        self.tokens: dict[str, int] = {}  # per visitor: the newest live change, so only the last of a burst runs
        self.done: dict[str, int] = {}  # per visitor: the token last generated, so a burst's followers generate nothing
        self.lock = threading.Lock()
        self.counter = itertools.count(1)

    async def live_tick(self, live: bool, model: str | None, request: gr.Request = None) -> Any:
        """A change on the page while Live is on: after LIVE_DEBOUNCE_S, a new token in the hidden state if no later
        change came, else nothing (the state keeps the token live_generate has already made)."""
        if not live or not self.is_live(model):
            return gr.skip()
        session = session_of(request)
        token = self.tokens[session] = next(self.counter)
        await asyncio.sleep(LIVE_DEBOUNCE_S)
        return token if self.tokens.get(session) == token else gr.skip()

    def live_generate(self, description: str, negative: str, category: str, gender: str, colour: str, season: str,
                      num_images: float, steps: float, guidance: float, sampler: str, seed: float, random_seed: bool,
                      model: str | None, truncation: float | None, token: int,
                      request: gr.Request = None) -> Iterator[tuple[Any, ...]]:
        """Runs after every tick; generates once per new token (the first follower of a burst), with the page's values
        as they are now."""
        session = session_of(request)
        with self.lock:
            fresh = bool(token) and self.done.get(session) != token
            if fresh:
                self.done[session] = token
        if not fresh or not (description or "").strip():
            yield gr.skip(), gr.skip(), gr.skip(), gr.skip()
            return
        # the seed stays put while the description changes, so the same garment follows the words
        yield from self.generate(description, negative, category, gender, colour, season, num_images, steps, guidance,
                                 sampler, seed, False, model, truncation, request, progress=lambda *args, **kwargs: None)

    def wire(self, triggers: list[Any], live: gr.Checkbox, model: gr.components.Component, live_token: gr.State,
             inputs: list[Any], outputs: list[Any], concurrency: int) -> list[Any]:
        """A tick and a live generation after each trigger (a component's input or release event); returns the
        generations, for Stop to cancel."""
        events = []
        for trigger in triggers:
            tick = trigger(self.live_tick, [live, model], live_token, api_visibility="private", queue=False,
                           show_progress="hidden", trigger_mode="multiple")
            # always_last: a follower that comes while the one before is still pending runs after it; Gradio's
            # default for .then ("once") drops it, and the burst's last follower, the one that carries the new
            # token, was lost whenever a stale follower's queue round trip outlasted a keystroke (a loaded machine)
            events.append(tick.then(self.live_generate, [*inputs, live_token], outputs, api_visibility="private",
                                    show_progress="hidden", concurrency_id=MODEL_JOBS, concurrency_limit=concurrency,
                                    trigger_mode="always_last"))
        return events


__all__ = ["LIVE_DEBOUNCE_S", "LiveRegeneration"]
