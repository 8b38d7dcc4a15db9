"""A real training process is SIGKILLed mid-run; ``ckpt_path=last`` resumes it exactly.

Three subprocesses of ``python -m vldac_lightning.train``: an uninterrupted reference run, a run
killed after its second checkpoint (while the next iteration's rollout/update is under way), and
the same command with ``ckpt_path=last``. The resumed run must end with the reference run's exact
weights (CPU, tiny model: deterministic) and continue the killed run's MLflow run.
"""

from __future__ import annotations

import os
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

# 6 iterations of 8 env steps, a checkpoint after each; episodes end inside rollouts.
ARGS = ["debug=smoke", "env.max_episode_steps=3", "algo.total_env_steps=48", "callbacks.evaluation.num_episodes=2",
        "callbacks.evaluation.every_n_iterations=3", "torch_threads=1", "trainer.enable_progress_bar=false"]


def _command(tmp: Path, name: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "vldac_lightning.train", *ARGS, f"paths.log_dir={tmp / 'logs'}",
            f"hydra.run.dir={tmp / 'logs' / 'train' / 'runs' / name}", *extra]


def _env(uri: str) -> dict[str, str]:
    return {**os.environ, "MLFLOW_TRACKING_URI": uri, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _trainable(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def test_sigkill_then_ckpt_path_last_resumes_exactly(tmp_path: Path) -> None:
    import mlflow

    ref_dir, run_dir = tmp_path / "reference", tmp_path / "killed"
    reference = subprocess.run(_command(ref_dir, "ref"), cwd=ROOT, env=_env(f"sqlite:///{ref_dir / 'm.db'}"),
                               capture_output=True, text=True, timeout=600)
    assert reference.returncode == 0, reference.stderr[-3000:]

    uri = f"sqlite:///{run_dir / 'mlflow.db'}"
    run_dir.mkdir()
    log = (run_dir / "first.log").open("w")
    proc = subprocess.Popen(_command(run_dir, "first"), cwd=ROOT, env=_env(uri), stdout=log, stderr=log)
    ckpts = run_dir / "logs" / "train" / "runs" / "first" / "checkpoints"
    deadline = time.monotonic() + 300
    while not (ckpts / "step4.ckpt").exists():  # k = 2 optimizer steps per iteration
        assert proc.poll() is None, (run_dir / "first.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "no second checkpoint within 300 s"
        time.sleep(0.05)
    time.sleep(0.8)  # into iteration 2: its rollout and updates (an iteration takes ~1-2 s here)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    log.close()
    assert proc.returncode == -signal.SIGKILL
    saved = torch.load(ckpts / "last.ckpt", map_location="cpu", weights_only=True)  # never half-written
    checkpoint_step = saved["global_step"]
    assert checkpoint_step in (4, 6) and not list(ckpts.glob("*.tmp"))

    resumed = subprocess.run(_command(run_dir, "resumed", "ckpt_path=last"), cwd=ROOT, env=_env(uri),
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = run_dir / "logs" / "train" / "runs" / "resumed" / "checkpoints" / "last.ckpt"
    state = torch.load(final, map_location="cpu", weights_only=True)
    assert state["global_step"] == 12
    expected = _trainable(ref_dir / "logs" / "train" / "runs" / "ref" / "checkpoints" / "last.ckpt")
    got = state["state_dict"]
    assert set(got) == set(expected)
    for name in expected:
        assert torch.equal(got[name], expected[name]), f"{name} differs from the uninterrupted run"

    # One MLflow run, continued: every iteration's metrics exist, none twice up to the checkpoint.
    client = mlflow.MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("vldac_lightning").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.tags.get("resumed_from", "").endswith("last.ckpt")
    checkpoint_env_steps = checkpoint_step // 2 * 8
    for key in ("train/value_loss", "rollout/env_steps_per_s"):
        steps = Counter(m.step for m in client.get_metric_history(runs[0].info.run_id, key))
        assert set(steps) == {8 * i for i in range(1, 7)}, (key, steps)
        assert all(steps[s] == 1 for s in steps if s <= checkpoint_env_steps), (key, steps)
