"""Progress with an ETA for every phase that can take long (env start-up, evaluation, rollouts).

A phase that ends within ``quiet_s`` prints nothing. A longer one shows a tqdm bar on a terminal,
or — in a log file, under a scheduler — a line every ``every_s`` seconds with done/total, elapsed
time and ETA. A heartbeat thread keeps reporting while the phase waits on one slow item (an ALFWorld
game being generated and checked by the planner takes seconds to minutes), so a run never looks hung.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from types import TracebackType

log = logging.getLogger("vldac_lightning.progress")


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def eta(elapsed: float, done: float, total: float) -> str:
    """Remaining time at the average rate so far ('?' before the first item is done)."""
    if done <= 0 or total <= 0:
        return "?"
    return format_seconds(elapsed / done * max(total - done, 0))


class Progress:
    """``with Progress("evaluation", total=50, unit="episodes") as p: ... p.update()``."""

    def __init__(self, desc: str, total: int, *, unit: str = "it", quiet_s: float = 5.0, every_s: float = 10.0,
                 tty: bool | None = None) -> None:
        self.desc, self.total, self.unit = desc, int(total), unit
        self.quiet_s, self.every_s = quiet_s, every_s
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.done = 0
        self.start = time.monotonic()
        self._bar = None
        self._last_log: float | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._heartbeat, name=f"progress:{desc}", daemon=True)
        self._thread.start()

    def update(self, n: int = 1) -> None:
        self.set(self.done + n)

    def set(self, done: int, total: int | None = None) -> None:
        with self._lock:
            self.done = int(done)
            if total is not None:
                self.total = int(total)
            self._show(final=False)

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            if self._bar is not None:
                self._bar.n = self.done
                self._bar.close()
                self._bar = None
            elif self._last_log is not None:  # a logged phase gets its end line too
                self._show(final=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _heartbeat(self) -> None:
        while not self._stop.wait(max(0.05, min(self.every_s, 1.0) if self.tty else self.every_s / 2)):
            with self._lock:
                self._show(final=False)

    def _show(self, final: bool) -> None:
        now = time.monotonic()
        elapsed = now - self.start
        if elapsed < self.quiet_s and not final:
            return
        if self.tty:
            if self._bar is None:
                from tqdm.auto import tqdm

                self._bar = tqdm(total=self.total, initial=self.done, desc=self.desc, unit=f" {self.unit}",
                                 leave=False, dynamic_ncols=True)
            self._bar.n = self.done
            self._bar.refresh()
            return
        if final or self._last_log is None or now - self._last_log >= self.every_s:
            self._last_log = now
            log.info("%s: %d/%d %s, %s elapsed, ETA %s", self.desc, self.done, self.total, self.unit,
                     format_seconds(elapsed), "0s" if final else eta(elapsed, self.done, self.total))
