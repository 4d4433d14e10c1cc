"""The adapter registry (core) and feedback rows for the next round."""

from __future__ import annotations

import json

import pytest

from ragtune.adapters import AdapterInfo, delete_adapter, get_adapter, list_adapters, register_adapter
from ragtune.errors import BadInputError
from training.feedback_data import rows_from_feedback


def _folder(ws, name):
    folder = ws.path("adapters", name)
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text("{}")
    return folder


def test_register_list_get_delete(workspace):
    with pytest.raises(BadInputError, match="no adapters yet"):
        get_adapter(workspace, "nope")
    a = register_adapter(workspace, AdapterInfo("a1", str(_folder(workspace, "a1")), "tiny-llama", "lora",
                                                dataset="v1", data_hash="abc", metrics={"eval_loss": 1.5},
                                                config={"rank": 8}, created_at=100.0))
    register_adapter(workspace, AdapterInfo("a2", str(_folder(workspace, "a2")), "gemma-3-270m", "qlora",
                                            created_at=200.0))
    assert [x.name for x in list_adapters(workspace)] == ["a2", "a1"]
    got = get_adapter(workspace, "a1")
    assert got == a and got.metrics == {"eval_loss": 1.5} and got.config == {"rank": 8}
    assert json.loads((workspace.path("adapters", "a1", "ragtune.json")).read_text())["method"] == "lora"
    with pytest.raises(BadInputError, match=r"unknown adapter 'zz'.*Known adapters: a2, a1"):
        get_adapter(workspace, "zz")
    delete_adapter(workspace, "a1")
    assert [x.name for x in list_adapters(workspace)] == ["a2"]
    assert not workspace.path("adapters", "a1").exists()


def test_register_rejects_bad_records(workspace):
    with pytest.raises(BadInputError, match="does not exist"):
        register_adapter(workspace, AdapterInfo("ghost", str(workspace.path("adapters", "ghost")), "m"))
    with pytest.raises(BadInputError, match="Unknown training method"):
        register_adapter(workspace, AdapterInfo("x", str(_folder(workspace, "x")), "m", method="dora"))
    with pytest.raises(BadInputError, match="not a valid adapter name"):
        register_adapter(workspace, AdapterInfo("../evil", "/tmp", "m"))


def test_rows_from_feedback():
    feedback = [
        {"message_id": "1", "question": "What is the lead time?", "answer": "9 weeks.", "rating": "up"},
        {"message_id": "2", "question": "what is the lead time", "answer": "3 weeks.", "rating": "down",
         "correction": "The standard lead time is 9 weeks."},
        {"message_id": "3", "question": "Who is the CEO?", "answer": "Bob.", "rating": "down"},
        {"message_id": "4", "question": "How many vacation days?", "answer": "27 days.", "rating": "up"},
        {"message_id": "5", "question": "What is the per diem in Rotterdam?", "answer": "EUR 58.", "rating": "up"},
    ]
    rows = rows_from_feedback(feedback, exclude_questions=["what is the per diem in Rotterdam"])
    by_q = {r["messages"][0]["content"]: r for r in rows}
    assert set(by_q) == {"what is the lead time", "How many vacation days?"}
    assert by_q["what is the lead time"]["messages"][-1]["content"] == "The standard lead time is 9 weeks."
    assert by_q["what is the lead time"]["source"] == "correction"
