"""Stop a run promptly on SIGTERM/SIGINT (a scheduler's preemption, Ctrl-C) and lose nothing.

The signal handler only sets a flag. The places that can take long poll it — every env step of a
rollout or an evaluation, and every decode step of generation (a ``StoppingCriteria``) — and raise
:class:`RunInterrupted`, so a run stops within about one decode step wherever it is. Lightning's own
SIGTERM handling stops after the current minibatch of an update. ``train()`` then writes a
checkpoint where that is exact (see ``RolloutDataModule.safe_to_checkpoint``), marks the MLflow run
KILLED, prints the resume command and exits with ``128 + signal`` (143 for SIGTERM), so a job chain
(``afterok``) never mistakes a preempted run for a finished one. See docs/troubleshooting.md#stopping-a-run-sigterm-sigint-ctrl-c-preemption.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

__all__ = ["RunInterrupted", "StopRequest", "StoppedBySignal", "exit_now", "handle_signals", "local_stop_requested",
           "raise_if_stop_requested", "reclaim_signals", "stop_request", "sync_stop_request"]


def _distributed() -> bool:
    """Under DDP? Without importing torch: the env side (registry, pools) stays light to import."""
    if "torch.distributed" not in sys.modules:
        return False
    from vldac_lightning.utils.distributed import is_distributed as distributed

    return distributed()


class RunInterrupted(BaseException):
    """Raised where a run polls the stop flag after a signal. A ``BaseException`` (like
    ``KeyboardInterrupt``) so no ``except Exception`` on the way swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


class StoppedBySignal(SystemExit):
    """The run stopped on a signal with everything saved; its code is ``128 + signal``."""


def exit_now(code: int) -> None:
    """End the process at once after a handled stop: flush the logs and skip interpreter finalization.

    Everything that matters (checkpoint, MLflow status, the resume command) is written before this.
    Tearing down torch, transformers and Lightning module by module takes ~8-10 s on a loaded 2-core
    machine, which a scheduler's grace period should not be spent on. Command-line entry points only.
    """
    import logging
    import os
    import sys

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed stream must not keep the process alive
            pass
    os._exit(code)


class StopRequest:
    """A process-wide flag set by the signal handler and polled by long-running loops."""

    def __init__(self) -> None:
        self.signum: int | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def request(self, signum: int) -> None:
        if self.signum is None:
            self.signum = signum

    def clear(self) -> None:
        self.signum = None

    @property
    def exit_code(self) -> int:
        """The shell convention for a process ended by a signal: 128 + its number (SIGTERM: 143)."""
        return 128 + int(self.signum or signal.SIGTERM)


stop_request = StopRequest()


def local_stop_requested() -> bool:
    """A stop signal has arrived and this process may stop on its own, wherever it is.

    Under DDP a rank must not leave alone (the others would wait for it in the next all-reduce):
    ranks stop together at the start of an iteration (:func:`sync_stop_request`).
    """
    return stop_request.signum is not None and not _distributed()


def raise_if_stop_requested() -> None:
    """Raise :class:`RunInterrupted` if a stop signal has arrived (see :func:`local_stop_requested`)."""
    if local_stop_requested():
        raise RunInterrupted(int(stop_request.signum or signal.SIGTERM))


def sync_stop_request() -> None:
    """At an iteration boundary: stop here if a signal reached this process or, under DDP, any rank."""
    if not _distributed():
        raise_if_stop_requested()
        return
    import torch

    from vldac_lightning.utils.distributed import all_reduce_max

    signum = int(all_reduce_max(torch.tensor([stop_request.signum or 0]))[0])
    if signum:
        stop_request.request(signum)
        raise RunInterrupted(signum)


@contextmanager
def handle_signals(signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> Iterator[StopRequest]:
    """Route ``signals`` to :data:`stop_request` for the duration of the block (main thread only).

    A second Ctrl-C while stopping falls back to the previous handler (an immediate
    ``KeyboardInterrupt``), so an impatient user is never stuck.
    """
    stop_request.clear()
    if threading.current_thread() is not threading.main_thread():
        yield stop_request  # signal handlers can only be installed from the main thread
        return
    previous = {s: signal.getsignal(s) for s in signals}

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop_request.requested and signum == signal.SIGINT:
            prior = previous.get(signum)
            if callable(prior):
                prior(signum, frame)
            raise KeyboardInterrupt
        stop_request.request(signum)

    for s in signals:
        signal.signal(s, handler)
    _installed.update({s: handler for s in signals})
    try:
        yield stop_request
    finally:
        _installed.clear()
        for s, h in previous.items():
            signal.signal(s, h)


_installed: dict[int, Any] = {}


def reclaim_signals() -> None:
    """Put :func:`handle_signals`' handlers back after Lightning installed its own (DDP).

    Lightning's SIGTERM handler broadcasts from inside the handler, which deadlocks when the signal
    lands while another rank is in a different collective (a rollout's metrics all-reduce). Ours
    only sets the flag; ranks then stop together at the next iteration start (sync_stop_request).
    """
    if threading.current_thread() is threading.main_thread():
        for s, handler in _installed.items():
            signal.signal(s, handler)
