"""Published versions are kept; rollback restores an earlier one; feedback is stored per workspace."""

from __future__ import annotations

import pytest

from ragtune import feedback
from ragtune.errors import BadInputError
from serving.deploy import deployments


def test_publish_history_and_rollback(workspace):
    assert deployments.current(workspace) is None
    with pytest.raises(BadInputError, match="Nothing is published"):
        deployments.rollback(workspace)
    v1 = deployments.publish(workspace, "base", note="first")
    v2 = deployments.publish(workspace, "rag")
    v3 = deployments.publish(workspace, "base", note="third")
    assert [d.version for d in deployments.history(workspace)] == [v3.version, v2.version, v1.version]
    assert deployments.current(workspace).version == v3.version
    assert deployments.rollback(workspace).version == v2.version
    assert deployments.rollback(workspace).version == v1.version
    with pytest.raises(BadInputError, match="first published version"):
        deployments.rollback(workspace)
    assert deployments.rollback(workspace, to_version=v3.version).note == "third"
    assert [e["action"] for e in deployments.events(workspace)] == ["publish"] * 3 + ["rollback"] * 3
    assert (workspace.root / "deployments" / f"v{v2.version}.json").exists()
    with pytest.raises(BadInputError, match="No deployment version 99"):
        deployments.rollback(workspace, to_version=99)


def test_publish_refuses_what_cannot_be_served(workspace):
    with pytest.raises(BadInputError, match="Unknown variant"):
        deployments.publish(workspace, "best")
    with pytest.raises(BadInputError, match="has none yet"):
        deployments.publish(workspace, "ft")
    with pytest.raises(BadInputError, match="unknown adapter"):
        deployments.publish(workspace, "ft+rag:missing")
    with pytest.raises(BadInputError, match="uses no adapter"):
        deployments.publish(workspace, "rag", adapter="x")
    assert deployments.history(workspace) == []


def test_feedback_is_tied_to_the_answer_and_its_client(workspace, tmp_path):
    from ragtune.workspace import Workspace

    turn = feedback.record_conversation(workspace, "Q?", "A.", variant="ft", adapter="a1", deployment_version=3,
                                        channel="page", client="page:s1")
    with pytest.raises(BadInputError, match="was given to this client"):
        feedback.record_feedback(workspace, turn["message_id"], "up", client="page:s2")
    feedback.record_feedback(workspace, turn["message_id"], "up", client="page:s1")
    feedback.record_feedback(workspace, turn["message_id"], "down", correction="Better.", client="page:s1")
    rows = feedback.list_feedback(workspace)
    assert len(rows) == 1 and rows[0]["rating"] == "down" and rows[0]["correction"] == "Better."
    assert rows[0]["adapter"] == "a1" and rows[0]["deployment_version"] == 3
    other = Workspace.create("other", root=tmp_path / "workspaces")
    with pytest.raises(BadInputError, match="No answer"):
        feedback.record_feedback(other, turn["message_id"], "up")
    with pytest.raises(BadInputError, match="Rating"):
        feedback.record_feedback(workspace, turn["message_id"], "meh")
