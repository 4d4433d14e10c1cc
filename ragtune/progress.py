"""Progress for long commands: a live tqdm bar on a terminal, a plain line every few seconds otherwise.

tqdm alone stays silent when stderr is redirected (``disable=None``) or fills a log with carriage
returns; a redirected ``ragtune eval`` then said nothing for many minutes. Here, off a terminal,
one line ``desc: done/total (pct) rate, ETA`` is written every ``interval`` seconds, also while a
single step takes longer than that (a timer thread re-prints it).
"""

from __future__ import annotations

import os
import sys
import threading

from tqdm.auto import tqdm

DEFAULT_INTERVAL = float(os.environ.get("RAGTUNE_PROGRESS_INTERVAL", "10"))


class LineProgress(tqdm):
    """tqdm that prints whole lines (for logs and pipes) and re-prints at least every ``interval`` s."""

    def __init__(self, *args, interval: float = DEFAULT_INTERVAL, **kwargs):
        kwargs.setdefault("mininterval", interval)
        kwargs.setdefault("maxinterval", interval)
        kwargs["ascii"] = True
        kwargs.setdefault("ncols", 100)
        self._interval = interval
        self._stop = threading.Event()
        super().__init__(*args, **kwargs)
        self._ticker = threading.Thread(target=self._tick, name="ragtune-progress", daemon=True)
        self._ticker.start()

    def _tick(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.refresh()
            except Exception:  # noqa: BLE001 - progress must never break the work it reports
                return

    def display(self, msg=None, pos=None):
        if self.disable:
            return False
        self.fp.write((msg or self.__str__()).strip("\r") + "\n")
        self.fp.flush()
        return True

    def close(self):
        self._stop.set()
        if not self.disable and not getattr(self, "_closed_once", False):
            self._closed_once = True
            self.refresh()  # the final count, once
        self.disable = True
        super().close()


class _Bar:
    """The bar plus ``update_to(done, total, label)`` for callbacks that report absolute counts."""

    def __init__(self, bar: tqdm):
        self.bar = bar

    def update_to(self, done: int, total: int | None = None, label: str = "") -> None:
        if total is not None and total != self.bar.total:
            self.bar.total = total
        self.bar.update(max(0, done - self.bar.n))
        if label:
            self.bar.set_postfix_str(label[:40], refresh=False)

    def __getattr__(self, name):
        return getattr(self.bar, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.bar.close()


def progress_bar(total: int | None = None, *, desc: str = "", unit: str = "it", file=None,
                 interval: float | None = None, disable: bool = False) -> _Bar:
    """A bar on a terminal, a progress line every ``interval`` s (default 10) when output is redirected."""
    file = file or sys.stderr
    if disable:
        return _Bar(tqdm(total=total, disable=True))
    isatty = getattr(file, "isatty", lambda: False)()
    if isatty:
        return _Bar(tqdm(total=total, desc=desc, unit=unit, file=file, dynamic_ncols=True))
    return _Bar(LineProgress(total=total, desc=desc, unit=unit, file=file,
                             interval=DEFAULT_INTERVAL if interval is None else interval))


class PhaseProgress:
    """``progress(done, total, label)`` of a job with phases (files, then chunks) as one bar per phase.

    A new bar starts when the total changes or the count goes back; the first is called ``desc``,
    the next ones by their label ("embedding chunks").
    """

    def __init__(self, desc: str, unit: str = "it", disable: bool = False, file=None):
        self.desc, self.unit, self.disable, self.file = desc, unit, disable, file
        self.bar: _Bar | None = None
        self.total: int | None = None
        self.shown = desc

    def __call__(self, done: int, total: int | None, label: str = "") -> None:
        if self.bar is None or total != self.total or done < self.bar.n:
            self.shown = self.desc if self.bar is None else (label or self.desc)
            self.close()
            self.total = total
            self.bar = progress_bar(total=total, desc=self.shown, unit=self.unit, file=self.file,
                                    disable=self.disable)
        self.bar.update_to(done, total, label if label != self.shown else "")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
