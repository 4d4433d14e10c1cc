"""The error boundary: what reaches the browser is one plain sentence, never a stack trace."""

from __future__ import annotations

import gradio as gr
import pytest

from app.ui.common import AppContext, guarded
from ragtune.errors import BadInputError


def test_model_that_cannot_load_is_a_plain_message():
    ctx = AppContext(model="no-such-model")
    with pytest.raises(gr.Error) as info:
        guarded(ctx.engine)()
    message = info.value.message
    assert "could not be loaded" in message and "no-such-model" in message
    assert "Traceback" not in message
    assert "failed to load" in ctx.engine_status()


def test_user_errors_keep_their_sentence_and_bugs_get_a_short_one():
    def bad_file():
        raise BadInputError("The PDF is damaged and cannot be opened.")

    def bug():
        raise KeyError("chunks")

    with pytest.raises(gr.Error) as info:
        guarded(bad_file)()
    assert info.value.message == "The PDF is damaged and cannot be opened."
    with pytest.raises(gr.Error) as info:
        guarded(bug)()
    assert info.value.message.startswith("Something went wrong (KeyError")
    assert "\n" not in info.value.message and "File \"" not in info.value.message


def test_generator_handlers_are_guarded_too():
    def stream():
        yield "partial"
        raise BadInputError("The model server is down.")

    gen = guarded(stream)()
    assert next(gen) == "partial"
    with pytest.raises(gr.Error) as info:
        next(gen)
    assert info.value.message == "The model server is down."
