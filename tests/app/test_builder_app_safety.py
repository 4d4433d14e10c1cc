"""The builder app answers only for its own host and takes no state change from another site."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest

from .conftest import started_app


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        # Gradio's upload folder, of this app only (RunningApp copies the environment when it starts).
        mp.setenv("GRADIO_TEMP_DIR", str(tmp_path_factory.mktemp("gradio-uploads")))
        with started_app(tmp_path_factory.mktemp("safety-home"), workspace="safe") as running:
            running.uploads = Path(os.environ["GRADIO_TEMP_DIR"])
            mp.undo()
            yield running


def _workspaces(app) -> set[str]:
    return {p.name for p in (app.home / "workspaces").iterdir() if p.is_dir()}


def test_dns_rebinding_and_cross_site_calls_create_nothing(app):
    call = app.url + "/gradio_api/call/create"
    rebound = httpx.post(call, json={"data": ["rebound"]}, headers={"Host": f"attacker.example:{app.port}"}, timeout=30)
    assert rebound.status_code == 421, rebound.text
    cross = httpx.post(call, json={"data": ["planted"]}, timeout=30,
                       headers={"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"})
    assert cross.status_code == 403, cross.text
    form = httpx.post(app.url + "/gradio_api/upload", files={"files": ("x.md", b"# planted")}, timeout=30,
                      headers={"Origin": "https://evil.example"})
    assert form.status_code == 403, form.text
    assert "rebound" not in _workspaces(app) and "planted" not in _workspaces(app)


def test_the_app_itself_still_works(app):
    from gradio_client import Client

    page = httpx.get(app.url + "/", timeout=30)
    assert page.status_code == 200
    same_origin = httpx.post(app.url + "/gradio_api/call/create", json={"data": ["mine"]}, timeout=30,
                             headers={"Origin": app.url, "Sec-Fetch-Site": "same-origin"})
    assert same_origin.status_code == 200, same_origin.text
    Client(app.url, verbose=False, download_files=False).predict("viaclient", api_name="/create")
    assert {"viaclient"} <= _workspaces(app)


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_dropped_files_leave_gradios_cache_once_read(app, tmp_path):
    """Issue 24: files dropped on the app stayed in Gradio's cache, refused ones included (250 MB stayed)."""
    from gradio_client import Client, handle_file

    good = tmp_path / "dock_rules.md"
    good.write_text("# Dock rules\n\nTrucks wait at gate 4 until the dock light turns green.\n")
    refused = tmp_path / "blank.txt"
    refused.write_text("   \n")
    client = Client(app.url, verbose=False, download_files=False)
    results, _, _ = client.predict("safe", [handle_file(str(good)), handle_file(str(refused))], api_name="/ingest")
    rows = {row[0]: row for row in results["data"]}
    assert rows["dock_rules.md"][1] == "added" and rows["blank.txt"][1] == "failed", rows
    stored = [p for p in (app.home / "workspaces" / "safe" / "documents").rglob("*") if p.is_file()]
    assert any(p.read_bytes() == good.read_bytes() for p in stored)  # the workspace has its own copy
    # Nothing of either is left (Gradio 6 itself leaves one empty tmpXXXX file per upload request).
    left = _files(app.uploads)
    assert not [f for f in left if f.endswith(("dock_rules.md", "blank.txt"))], left
    assert all((app.uploads / f).stat().st_size == 0 for f in left), left


def test_a_dropped_training_file_leaves_gradios_cache_once_imported(app, tmp_path):
    """Issue 24: the Build tab's training-file drop was capped, but its upload stayed in Gradio's cache."""
    from gradio_client import Client, handle_file

    from app.ui.build import DATA_UPLOAD
    from ragtune.jobs import list_jobs
    from ragtune.workspace import Workspace

    rows = (Path(__file__).resolve().parents[2] / "datasets" / "sample_train_qa.jsonl").read_text().splitlines()[:12]
    train = tmp_path / "k7_questions.jsonl"
    train.write_text("\n".join(rows) + "\n")
    client = Client(app.url, verbose=False, download_files=False)
    client.predict("safe", DATA_UPLOAD, handle_file(str(train)), "k7-upload", "tiny-llama", "lora", 2, 4, 0.1, 2e-4,
                   api_name="/start_finetune")
    ws = Workspace.open(app.home / "workspaces" / "safe")
    deadline = time.monotonic() + 180  # a bound on the wait, not a measurement
    while time.monotonic() < deadline and not [j for j in list_jobs(ws, kind="synth") if j.finished]:
        time.sleep(0.5)
    [synth] = list_jobs(ws, kind="synth")
    assert synth.status == "succeeded", synth.error
    dataset = synth.result["dataset"]  # the workspace has its own copy of the rows
    assert dataset["file"] == "k7_questions.jsonl" and sum(dataset["counts"].values()) == 12, dataset
    deadline = time.monotonic() + 30  # deleted by a thread that checks twice a second
    while time.monotonic() < deadline and [f for f in _files(app.uploads) if f.endswith("k7_questions.jsonl")]:
        time.sleep(0.5)
    left = _files(app.uploads)
    assert not [f for f in left if f.endswith("k7_questions.jsonl")], left


def test_a_file_over_the_size_limit_is_refused_and_not_kept(app, tmp_path):
    from gradio_client import Client, handle_file

    from ragtune.ingest_gate import IngestLimits

    limit = IngestLimits().max_file_bytes
    big = tmp_path / "huge.txt"
    with open(big, "wb") as f:  # sparse: nothing to read from disk, but the server gets every byte
        f.truncate(limit + 1)
    client = Client(app.url, verbose=False, download_files=False)
    with pytest.raises(ValueError, match="exceeds the maximum file size"):  # gradio_client checks first
        client.predict("safe", [handle_file(str(big))], api_name="/ingest")
    # What a browser or script sends without checking: refused at the limit, in one sentence, nothing kept.
    before = _files(app.uploads)
    started = time.monotonic()
    with open(big, "rb") as f:
        r = httpx.post(app.url + "/gradio_api/upload", files={"files": ("huge.txt", f)}, timeout=120)
    print(f"over-size upload refused in {time.monotonic() - started:.1f} s: {r.status_code} {r.text!r}")
    assert r.status_code == 413, r.text
    assert r.text.count(".") == 1 and str(limit) in r.text, r.text
    assert _files(app.uploads) == before
