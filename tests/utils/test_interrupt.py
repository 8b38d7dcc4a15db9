"""Stop signals set a flag that long loops poll; they never kill the process outright."""

from __future__ import annotations

import os
import signal

import pytest
import torch

from tests.envs.faulty import make_faulty
from vldac_lightning.envs import EnvPool, train_seeds
from vldac_lightning.models.engines.hf import StopOnSignal
from vldac_lightning.utils.interrupt import (
    RunInterrupted,
    handle_signals,
    raise_if_stop_requested,
    stop_request,
)


def test_sigterm_sets_the_flag_and_handlers_are_restored() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with handle_signals() as stop:
        raise_if_stop_requested()  # nothing yet
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested and stop.exit_code == 143
        with pytest.raises(RunInterrupted, match="SIGTERM"):
            raise_if_stop_requested()
    assert signal.getsignal(signal.SIGTERM) is before
    stop_request.clear()


def test_a_second_ctrl_c_interrupts_at_once() -> None:
    with handle_signals() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested and stop.exit_code == 130
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    stop_request.clear()


def test_generation_stops_at_the_next_decode_step_once_requested() -> None:
    criterion, ids = StopOnSignal(), torch.zeros(3, 5, dtype=torch.long)
    assert not criterion(ids, torch.zeros(3, 7)).any()
    stop_request.request(signal.SIGTERM)
    try:
        assert criterion(ids, torch.zeros(3, 7)).all()
    finally:
        stop_request.clear()


def test_workers_dying_during_a_stop_are_not_replaced() -> None:
    """Ctrl-C or a scheduler's signal reaches the workers too: their deaths end the run, no respawn."""
    with EnvPool([make_faulty] * 2, mode="async", seeds=train_seeds(3, 2), name="faulty") as pool:
        pool.reset()
        pid = pool.pids[1]
        stop_request.request(signal.SIGTERM)
        try:
            os.kill(pid, signal.SIGKILL)
            with pytest.raises(RunInterrupted):
                pool.step(["-", "-"])
        finally:
            stop_request.clear()
        assert pool.restarts == 0
