"""What experiments/gpu_check.sh relies on, checked on the CPU: its timed training runner works with
MLflow unimportable (the GPU image has none; logger=none runs must not need it), and its summary
passes only when every stage did."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow

# Runs experiments/train_timed.py as if mlflow were not installed, and reports whether any module
# of it was loaded by the end of the run.
BLOCK_MLFLOW = """
import atexit, runpy, sys

# A None entry makes `import mlflow` raise and importlib.util.find_spec("mlflow") return None: to
# every importer (ours, Lightning's, accelerate's availability checks) mlflow looks not installed.
sys.modules["mlflow"] = None
atexit.register(lambda: print("MLFLOW_LOADED" if sys.modules.get("mlflow") is not None
                              or any(m.startswith("mlflow.") for m in sys.modules) else "NO_MLFLOW"))
sys.argv = ["train_timed.py", *sys.argv[1:]]
runpy.run_path("experiments/train_timed.py", run_name="__main__")
"""


def test_timed_smoke_runs_without_mlflow_and_counts_decode_steps(tmp_path: Path) -> None:
    out = tmp_path / "timing.json"
    args = ["--out", str(out), "--run-dir", str(tmp_path / "run"), "debug=smoke", "logger=none",
            "env.max_episode_steps=3", "callbacks.evaluation.num_episodes=2", "model.response_mode=json",
            "model.sampling.max_new_tokens=4", "trainer=cpu", f"paths.log_dir={tmp_path / 'logs'}"]
    proc = subprocess.run([sys.executable, "-c", BLOCK_MLFLOW, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "NO_MLFLOW"
    record = json.loads(out.read_text())
    assert record["status"] == "ok" and record["error"] is None
    assert "eval/success_rate" in record["metrics"]
    # Smoke: evaluation before training, after each of the 2 iterations; 2 rollouts of 4 steps.
    assert record["calls"]["evaluation"] == 3 and record["calls"]["rollout"] == 2
    assert record["calls"]["iteration"] == 2  # one training_step per PPO iteration
    assert record["calls"]["update_minibatch"] == 8  # 2 epochs x 2 minibatches x 2 iterations
    # Every generate call runs 1..4 decode steps (JSON mode, 4 new tokens at most).
    calls = record["calls"]["generate"]
    assert calls <= record["decode_steps"] <= 4 * calls
    # Every generate call happens inside an evaluation or a rollout (the timings are inclusive).
    seconds = record["seconds"]
    assert 0 < seconds["generate"] <= seconds["evaluation"] + seconds["rollout"]
    assert 0 < seconds["update_minibatch"] < record["ppo_update_s"] < seconds["iteration"]  # rollouts taken out
    assert record["train_s"] <= record["wall_s"]


def _write_stages(path: Path, rows: list[tuple[str, str, int, float]]) -> Path:
    path.write_text("".join(f"{n}\t{s}\t{rc}\t{t}\n" for n, s, rc, t in rows))
    return path


def _summary(tmp_path: Path, stages: Path) -> tuple[int, dict]:
    proc = subprocess.run([sys.executable, "experiments/gpu_check_summary.py", "--stages", str(stages),
                           "--dir", str(tmp_path), "--total-s", "100"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout  # one JSON line
    return proc.returncode, json.loads(lines[0])


def test_summary_passes_only_when_every_stage_passed(tmp_path: Path) -> None:
    (tmp_path / "2b_json.json").write_text(json.dumps({
        "status": "ok", "device": "NVIDIA H200", "wall_s": 50.0, "decode_steps": 1824, "ms_per_decode_step": 30.0,
        "peak_gpu_mem_gb": 12.5, "metrics": {"eval/success_rate": 0.25}}))
    (tmp_path / "bench_rollout.json").write_text(json.dumps({
        "ours_steps_per_s": {"16": 40.0, "64": 150.0, "256": 500.0}, "ours_tokens_per_s": {"16": 120.0},
        "peak_gpu_mem_gb": 20.0, "breakdown": {"iteration_total": 9.0}}))
    rows = [("env", "ok", 0, 3.0), ("2b_json", "ok", 0, 55.0), ("bench_rollout", "ok", 0, 80.0)]
    rc, summary = _summary(tmp_path, _write_stages(tmp_path / "ok.tsv", rows))
    assert rc == 0 and summary["gpu_check"] == "pass"
    assert summary["device"] == "NVIDIA H200" and summary["peak_gpu_mem_gb"] == 20.0
    assert summary["stages"]["bench_rollout"]["env_steps_per_s"]["256"] == 500.0
    assert summary["stages"]["2b_json"]["decode_steps"] == 1824

    rows[2] = ("bench_rollout", "timeout", 124, 160.0)
    rc, summary = _summary(tmp_path, _write_stages(tmp_path / "timeout.tsv", rows))
    assert rc == 1 and summary["gpu_check"] == "fail"
    assert summary["stages"]["bench_rollout"]["status"] == "timeout"
    assert summary["stages"]["2b_json"]["status"] == "ok"  # the other stages' results are kept

    # A run whose own record says it failed fails its stage even when the process exited 0.
    (tmp_path / "2b_json.json").write_text(json.dumps({"status": "failed", "error": "RuntimeError: boom"}))
    rc, summary = _summary(tmp_path, _write_stages(tmp_path / "ok2.tsv", [("2b_json", "ok", 0, 5.0)]))
    assert rc == 1 and summary["stages"]["2b_json"]["status"] == "failed"
    assert "boom" in summary["stages"]["2b_json"]["error"]
