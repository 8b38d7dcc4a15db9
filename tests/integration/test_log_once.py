"""Every log line of a real run is printed once on the console and written once to the run's log file."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
HYDRA_LINE = re.compile(r"^\[[^\]]+\]\[[^\]]+\]\[(DEBUG|INFO|WARNING|ERROR|CRITICAL)\] - (?P<msg>.*)$")
PLAIN_LINE = re.compile(r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL): (?P<msg>.*)$")  # Lightning's own handler


def log_messages(text: str) -> list[str]:
    """The message part of every log line, whichever handler printed it."""
    out = []
    for line in text.splitlines():
        match = HYDRA_LINE.match(line) or PLAIN_LINE.match(line)
        if match:
            out.append(match["msg"])
    return out


def test_a_training_run_prints_each_log_line_once(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    result = subprocess.run(
        [sys.executable, "-m", "vldac_lightning.train", "debug=smoke", f"paths.log_dir={tmp_path / 'logs'}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    console = result.stdout + result.stderr
    assert result.returncode == 0, console[-4000:]
    messages = log_messages(console)
    # Lightning's and our own loggers both spoke (the duplicates came from Lightning's handler).
    assert any(m.startswith("Seed set to") for m in messages), console
    assert any("Trainer.fit" in m for m in messages), console
    assert any(m.startswith("eval @ ") for m in messages), console
    assert {m: n for m, n in Counter(messages).items() if n > 1} == {}
    (log_file,) = (tmp_path / "logs").glob("train/runs/*/train.log")
    assert sorted(log_messages(log_file.read_text())) == sorted(messages)
