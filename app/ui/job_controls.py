"""What every job card of the builder app has (the index, the fine-tune, the evaluation): a row of Start,
Cancel and Resume buttons, and a timer handler that redraws the card from its newest job."""

from __future__ import annotations

from typing import Callable

import gradio as gr

from .common import log


class JobButtons:
    """Start / Cancel / Resume in one row; Cancel and Resume start disabled, the card's view enables them
    from the job's status (running; resumable)."""

    def __init__(self, start_label: str, *, start_id: str, prefix: str):
        with gr.Row():
            self.start = gr.Button(start_label, variant="primary", elem_id=start_id)
            self.cancel = gr.Button("Cancel", variant="stop", interactive=False, elem_id=f"{prefix}-cancel")
            self.resume = gr.Button("Resume", interactive=False, elem_id=f"{prefix}-resume")


def refreshing(view: Callable, outputs: list, what: str) -> Callable:
    """A timer's handler that calls ``view``; a failure is logged and leaves the outputs as they are (a toast
    every second would drown the page), and the next tick retries."""
    def tick(*args):
        try:
            return view(*args)
        except Exception:  # noqa: BLE001 - the next tick retries
            log.debug("%s refresh failed", what, exc_info=True)
            return tuple(gr.skip() for _ in outputs)

    return tick
