"""Fixtures for the app tests: a real `ragtune app` process on a free port, and Debian's Chromium."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from ragtune.net import free_port
from ragtune.tether import stop_group, tethered_popen

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


class RunningApp:
    def __init__(self, home: Path, workspace: str | None, model: str = "tiny-llama", sample: bool = False):
        self.home, self.workspace = home, workspace
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        home.mkdir(parents=True, exist_ok=True)
        self.log_path = home / "app.log"
        env = {**os.environ, "RAGTUNE_HOME": str(home), "GRADIO_ANALYTICS_ENABLED": "False",
               "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
        env.pop("RAGTUNE_WORKSPACES", None)
        self._log = open(self.log_path, "wb")
        argv = [sys.executable, "-m", "app.cli", "app", "--model", model, "--port", str(self.port)]
        argv += ["--sample"] if sample else ["--workspace", workspace]
        # Tethered: a test run that is killed (a CI timeout, Ctrl-C twice) takes its app servers with it.
        self.proc = tethered_popen(argv, cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 240) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the app exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"the app did not answer within {timeout:.0f} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        # Background jobs run in their own sessions: stop those this app started, by PID.
        for job_json in (self.home / "workspaces").glob("*/jobs/*/job.json"):
            pid = json.loads(job_json.read_text()).get("pid")
            if pid and not (job_json.parent / "status.json").exists():
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        stop_group(self.proc, timeout=15)
        self._log.close()


@contextmanager
def started_app(home: Path, **kwargs):
    """A `ragtune app` process, ready to answer; stopped (its log tail printed) when done."""
    app = RunningApp(home, **kwargs)
    try:
        app.wait_ready()
        yield app
    finally:
        app.stop()
        print("---- app log (tail) ----\n" + app.log())


def app_fixture(home: str, workspace: str):
    """A module-scoped ``running_app`` of a test module's own: its own home folder and workspace, so the
    module stands alone in any order."""

    @pytest.fixture(scope="module")
    def running_app(tmp_path_factory):
        """A `ragtune app` on the tiny model, with its own home and workspace, for the module."""
        with started_app(tmp_path_factory.mktemp(home), workspace=workspace) as app:
            yield app

    return running_app


running_app = app_fixture("app-home", "flow")


def open_page(browser, url: str):
    """(context, page) of a fresh browser context on `url`; close the context when done."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(url)
    return context, page


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Debian chromium is missing: apt-get install -y chromium"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser, running_app):
    context, pg = open_page(browser, running_app.url)
    yield pg
    context.close()
