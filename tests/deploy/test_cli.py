"""`ragtune keys` and `ragtune deployments` from the command line."""

from __future__ import annotations

import json

from app.cli import main
from serving.deploy import keys


def test_keys_and_deployments_commands(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RAGTUNE_WORKSPACES", str(tmp_path / "ws"))
    assert main(["workspace", "create", "shop"]) == 0
    assert main(["keys", "create", "web", "--rate", "7", "-w", "shop"]) == 0
    key = capsys.readouterr().out.strip().splitlines()[-1]
    assert keys.parse_key(key)
    assert main(["keys", "list", "-w", "shop", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed[0]["rate_limit_per_min"] == 7 and key not in json.dumps(listed)
    assert main(["keys", "revoke", key, "-w", "shop"]) == 0
    assert main(["deployments", "publish", "base", "-w", "shop"]) == 0
    assert main(["deployments", "publish", "rag", "-w", "shop", "--note", "index ready"]) == 0
    assert main(["deployments", "rollback", "-w", "shop"]) == 0
    capsys.readouterr()
    assert main(["deployments", "list", "-w", "shop", "--json"]) == 0
    history = json.loads(capsys.readouterr().out)
    assert [(d["version"], d["variant"], d["current"]) for d in history] == [(2, "rag", False), (1, "base", True)]
    assert main(["deployments", "rollback", "-w", "shop"]) == 2
    assert "first published version" in capsys.readouterr().err
    assert main(["next-round", "-w", "shop"]) == 2
    assert "no new feedback" in capsys.readouterr().err
    assert main(["next-round", "-w", "shop", "--finish"]) == 2
    assert "No training round yet" in capsys.readouterr().err
    assert main(["next-round", "-w", "shop", "--list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
