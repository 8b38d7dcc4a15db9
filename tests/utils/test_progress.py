"""Long phases report progress with an ETA; short ones stay quiet."""

from __future__ import annotations

import logging
import threading

import pytest

from vldac_lightning.utils.progress import Progress, eta, format_seconds


def test_eta_is_the_average_rate_so_far() -> None:
    # 3 of 12 done in 30 s: 10 s each, 9 left -> 90 s.
    assert eta(30.0, 3, 12) == "1m30s"
    assert eta(10.0, 0, 12) == "?"
    assert format_seconds(3725) == "1h02m" and format_seconds(59) == "59s"


def test_a_quick_phase_prints_nothing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="vldac_lightning.progress"):
        with Progress("quick", 3, quiet_s=60, tty=False) as p:
            p.update(3)
    assert caplog.records == []


def test_a_long_phase_logs_done_total_and_eta(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="vldac_lightning.progress"):
        with Progress("evaluation", 4, unit="episodes", quiet_s=0, every_s=0, tty=False) as p:
            p.update()
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("evaluation: 1/4 episodes, ") and " elapsed, ETA " in m for m in messages)
    assert messages[-1].startswith("evaluation: 1/4 episodes") and messages[-1].endswith("ETA 0s")


def test_the_heartbeat_reports_while_waiting_on_one_slow_item(caplog: pytest.LogCaptureFixture) -> None:
    seen = threading.Event()

    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "0/2 envs" in record.getMessage():
                seen.set()

    logger = logging.getLogger("vldac_lightning.progress")
    handler = Handler()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with Progress("resetting", 2, unit="envs", quiet_s=0, every_s=0.05, tty=False):
            # Nothing completes; only the heartbeat thread can report (waits up to 30 s, not timed).
            assert seen.wait(30)
    finally:
        logger.removeHandler(handler)
