"""A child server dies with the process that started it: normal exit, exception, SIGTERM and SIGKILL.

The owner is a real Python process that starts a real HTTP server (the standard library's) through
`tethered_popen`, prints the server's process group and waits; the test then ends the owner one way or
another and checks that the whole group is gone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import httpx
import pytest

from ragtune.net import free_port

OWNER = textwrap.dedent("""
    import subprocess, sys, time
    from ragtune.tether import tethered_popen
    port, how = int(sys.argv[1]), sys.argv[2]
    proc = tethered_popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print(proc.pid, flush=True)
    sys.stdin.readline()  # the test says when
    if how == "raise":
        raise RuntimeError("the owner crashed")
    if how == "wait":
        time.sleep(600)  # until the test signals it
""")


def _group_gone(pgid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def _serving(port: int, within: float = 30.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200
        except httpx.HTTPError:
            time.sleep(0.1)
    return False


@pytest.mark.parametrize("how", ["exit", "raise", "SIGTERM", "SIGKILL"])
def test_the_server_dies_with_its_owner(how, tmp_path):
    port = free_port("127.0.0.1")
    owner = subprocess.Popen([sys.executable, "-c", OWNER, str(port), "wait" if how.startswith("SIG") else how],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             cwd=os.getcwd())
    pgid = int(owner.stdout.readline())
    try:
        assert _serving(port), "the tethered server did not come up"
        owner.stdin.write("go\n")
        owner.stdin.flush()
        if how.startswith("SIG"):
            owner.send_signal(getattr(signal, how))
        owner.wait(30)
        assert _group_gone(pgid, within=20), f"the server outlived its owner ({how})"
    finally:
        owner.kill()
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_the_watcher_exits_with_the_servers_code_and_a_stop_by_group_still_works():
    from ragtune.tether import release, tethered_popen

    done = tethered_popen([sys.executable, "-c", "raise SystemExit(3)"])
    assert done.wait(30) == 3  # a server that died is seen as dead, with its code (restarts rely on it)
    release(done)
    port = free_port("127.0.0.1")
    server = tethered_popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert _serving(port)
        os.killpg(server.pid, signal.SIGTERM)  # how VLLMServer stops its server
        server.wait(30)
        assert _group_gone(server.pid, within=20)
    finally:
        release(server)
        try:
            os.killpg(server.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
