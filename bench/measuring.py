"""What the benchmarks measure a call by: its time and the extra peak RSS of this process."""

from __future__ import annotations

import threading
import time


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def measured(fn):
    """(result, seconds, extra peak RSS of this process in MB) of fn(), RSS sampled every 5 ms."""
    start = peak = rss_mb()
    stop = threading.Event()

    def sample():
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, rss_mb())
            stop.wait(0.005)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    t0 = time.perf_counter()
    try:
        result = fn()
    finally:
        elapsed = time.perf_counter() - t0
        stop.set()
        thread.join()
    return result, elapsed, max(peak, rss_mb()) - start
