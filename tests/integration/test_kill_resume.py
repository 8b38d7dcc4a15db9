"""A real training process is killed or stopped mid-run; ``ckpt_path=...`` resumes it exactly.

Subprocesses of ``python -m vldac_lightning.train`` (through ``signal_hook.py``, which makes the
process signal *itself* at a chosen optimizer step or decode step, so where it stops never depends on
the machine's speed), compared with one uninterrupted reference run (CPU, tiny model: deterministic):

- SIGKILL mid-update: nothing can be saved; ``ckpt_path=last`` continues from the last periodic
  checkpoint, in the same MLflow run, and ends at the reference run's exact weights.
- SIGTERM mid-generation: the run stops at once with exit code 143, writes a checkpoint (the rollout
  had not changed any weight yet), marks its MLflow run KILLED and prints the resume command, which
  ends at the reference run's exact weights.
- SIGTERM mid-update: exit 143 and KILLED, but no new checkpoint (it would not resume exactly).
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT

pytestmark = pytest.mark.slow

HOOK = Path(__file__).with_name("signal_hook.py")
# 6 iterations of 8 env steps, k = 2 optimizer steps each, a checkpoint after each; episodes end
# inside rollouts.
ARGS = ["debug=smoke", "env.max_episode_steps=3", "algo.total_env_steps=48", "callbacks.evaluation.num_episodes=2",
        "callbacks.evaluation.every_n_iterations=3", "torch_threads=1", "trainer.enable_progress_bar=false"]
K = 2


def _command(tmp: Path, name: str, *extra: str, hook: bool = False) -> list[str]:
    entry = [str(HOOK)] if hook else ["-m", "vldac_lightning.train"]
    return [sys.executable, *entry, *ARGS, f"paths.log_dir={tmp / 'logs'}",
            f"hydra.run.dir={tmp / 'logs' / 'train' / 'runs' / name}", *extra]


def _env(uri: str, **extra: str) -> dict[str, str]:
    return {**os.environ, "MLFLOW_TRACKING_URI": uri, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **extra}


def _ckpts(tmp: Path, name: str) -> Path:
    return tmp / "logs" / "train" / "runs" / name / "checkpoints"


def _trainable(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def _assert_same_weights(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert set(got) == set(expected)
    for name in expected:
        assert torch.equal(got[name], expected[name]), f"{name} differs from the uninterrupted run"


def _runs(uri: str) -> list:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    return client.search_runs([client.get_experiment_by_name("vldac_lightning").experiment_id])


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    """The final trainable weights of an uninterrupted run."""
    ref_dir = tmp_path_factory.mktemp("reference")
    done = subprocess.run(_command(ref_dir, "ref"), cwd=ROOT, env=_env(f"sqlite:///{ref_dir / 'm.db'}"),
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return _trainable(_ckpts(ref_dir, "ref") / "last.ckpt")


def test_sigkill_then_ckpt_path_last_resumes_exactly(tmp_path: Path, reference: dict[str, torch.Tensor]) -> None:
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # Killed just before optimizer step 5: iteration 2's rollout is collected and its update under
    # way; the last checkpoint is the one after iteration 1 (step 4).
    killed = subprocess.run(_command(tmp_path, "first", hook=True), cwd=ROOT, capture_output=True, text=True,
                            env=_env(uri, VLDAC_TEST_SIGNAL="KILL", VLDAC_TEST_SIGNAL_AT="optimizer_step:5"),
                            timeout=900)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    ckpts = _ckpts(tmp_path, "first")
    saved = torch.load(ckpts / "last.ckpt", map_location="cpu", weights_only=True)  # never half-written
    assert saved["global_step"] == 4 and not list(ckpts.glob("*.tmp"))

    resumed = subprocess.run(_command(tmp_path, "resumed", "ckpt_path=last"), cwd=ROOT, env=_env(uri),
                             capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    state = torch.load(_ckpts(tmp_path, "resumed") / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["global_step"] == 12
    _assert_same_weights(state["state_dict"], reference)

    # One MLflow run, continued: every iteration's metrics exist, none twice up to the checkpoint.
    client = mlflow.MlflowClient(tracking_uri=uri)
    runs = _runs(uri)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.tags.get("resumed_from", "").endswith("last.ckpt")
    for key in ("train/value_loss", "rollout/env_steps_per_s"):
        steps = Counter(m.step for m in client.get_metric_history(runs[0].info.run_id, key))
        assert set(steps) == {8 * i for i in range(1, 7)}, (key, steps)
        assert all(steps[s] == 1 for s in steps if s <= 16), (key, steps)


def test_sigterm_mid_generation_saves_exits_143_and_resumes_exactly(
        tmp_path: Path, reference: dict[str, torch.Tensor]) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    stamp = tmp_path / "sent"
    # SIGTERM at the first decode step after optimizer step 4: inside iteration 2's rollout.
    stopped = subprocess.run(
        _command(tmp_path, "first", hook=True), cwd=ROOT, capture_output=True, text=True, timeout=900,
        env=_env(uri, VLDAC_TEST_SIGNAL="TERM", VLDAC_TEST_SIGNAL_AT="decode_after_step:4",
                 VLDAC_TEST_SIGNAL_STAMP=str(stamp)))
    ended = time.time()
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    # Generous bound (the tiny model stops within a decode step; this only catches "runs to the end").
    assert ended - float(stamp.read_text()) < 60
    ckpt = _ckpts(tmp_path, "first") / "last.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert state["global_step"] == 4  # the iteration had collected part of its rollout, no update yet
    assert "Stopped by SIGTERM" in stopped.stdout
    match = re.search(r"Resume with: (.+)", stopped.stdout)
    assert match, stopped.stdout[-2000:]
    command = shlex.split(match.group(1))
    assert command[:3] == ["python", "-m", "vldac_lightning.train"] and f"ckpt_path={ckpt}" in command
    runs = _runs(uri)
    assert len(runs) == 1 and runs[0].info.status == "KILLED"

    # The printed command (with this test's interpreter and a new output dir) resumes exactly, in the
    # same (KILLED, not finished) MLflow run.
    out = tmp_path / "logs" / "train" / "runs" / "resumed"
    resumed = subprocess.run([sys.executable, *command[1:], f"hydra.run.dir={out}"], cwd=ROOT, env=_env(uri),
                             capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert final["global_step"] == 12
    _assert_same_weights(final["state_dict"], reference)
    runs = _runs(uri)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"


def test_sigterm_mid_update_keeps_the_last_periodic_checkpoint(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # Sent as iteration 1 takes its first optimizer step (step 3 of 4): the run stops at the next
    # minibatch with the iteration's weights half-updated.
    stopped = subprocess.run(
        _command(tmp_path, "first", hook=True), cwd=ROOT, capture_output=True, text=True, timeout=900,
        env=_env(uri, VLDAC_TEST_SIGNAL="TERM", VLDAC_TEST_SIGNAL_AT="optimizer_step:3"))
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    ckpts = _ckpts(tmp_path, "first")
    assert torch.load(ckpts / "last.ckpt", map_location="cpu", weights_only=True)["global_step"] == 2
    assert "the last periodic one" in stopped.stdout and "Resume with:" in stopped.stdout
    assert _runs(uri)[0].info.status == "KILLED"
