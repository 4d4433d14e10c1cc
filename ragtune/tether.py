"""Child servers that die with the process that started them, however it ends.

A server ragtune starts (vLLM) runs in a process group of its own, so that stopping it reaches its
engine-core children too; but then nothing stops it when its owner dies without cleaning up (SIGKILL,
an out-of-memory kill, a crash): two 4.4 GB vLLM servers were found running under init 20 minutes after
their owner was gone. ``tethered_popen`` starts the server under a small watcher (``python -m
ragtune.tether``) that holds the read end of a pipe whose write end only the owner holds. The kernel
closes that end when the owner exits in any way, the watcher reads end-of-file and stops the whole group
(SIGTERM, then SIGKILL after a grace period). PR_SET_PDEATHSIG would not do: it fires when the *thread*
that forked exits, and ragtune starts servers from worker threads.

The watcher is the group's leader and the Popen's process, so ``os.killpg(proc.pid, ...)`` and
``proc.wait()`` work as they did on the server itself, and it exits with the server's exit code.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

GRACE_S = 10.0  # after SIGTERM, before SIGKILL


def tethered_popen(argv: list[str], **popen_kwargs) -> subprocess.Popen:
    """``subprocess.Popen(argv, start_new_session=True, **popen_kwargs)``, tied to this process's life."""
    read_end, write_end = os.pipe()  # both non-inheritable: only the watcher gets the read end (pass_fds)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "ragtune.tether", str(read_end), "--", *argv],
                                pass_fds=(read_end,), start_new_session=True, **popen_kwargs)
    except BaseException:
        os.close(write_end)
        raise
    finally:
        os.close(read_end)
    # Kept open for this process's lifetime; the kernel closes it on exit, which is the signal.
    proc._ragtune_tether_fd = write_end  # type: ignore[attr-defined]
    return proc


def release(proc: subprocess.Popen) -> None:
    """Close the owner's end once the server is stopped (or a restart replaces it), so fds do not pile up."""
    fd = getattr(proc, "_ragtune_tether_fd", None)
    if fd is not None:
        proc._ragtune_tether_fd = None  # type: ignore[attr-defined]
        try:
            os.close(fd)
        except OSError:
            pass


def stop_group(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """Stop a tethered server and everything in its process group: SIGTERM, ``timeout`` seconds to exit,
    then SIGKILL; returns once the group is gone (or 5 s after the SIGKILL) and closes the owner's end."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            break
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
        # The group may outlive its leader for a moment; make sure nothing keeps the server's port.
        deadline = time.monotonic() + wait
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not _group_alive(proc.pid):
            break
    release(proc)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _stop_group(child: subprocess.Popen) -> int:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the group's SIGTERM is for the server, not for us
    try:
        os.killpg(os.getpgrp(), signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + GRACE_S
    while child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    os.killpg(os.getpgrp(), signal.SIGKILL)  # the rest of the group, then us
    return 1


def main(args: list[str]) -> int:
    fd, separator, *argv = args
    if separator != "--" or not argv:
        print("usage: python -m ragtune.tether FD -- COMMAND...", file=sys.stderr)
        return 2
    watch = int(fd)
    child = subprocess.Popen(argv)  # same process group: a killpg of ours reaches it and its children
    while True:
        code = child.poll()
        if code is not None:
            return code
        readable, _, _ = select.select([watch], [], [], 0.5)
        if readable and not os.read(watch, 1):  # end of file: the owner is gone
            return _stop_group(child)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
