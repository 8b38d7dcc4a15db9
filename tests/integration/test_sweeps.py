"""Real multiruns on the smoke config: parallel jobs through the joblib launcher, an Optuna search, and
a SLURM submission (a stand-in ``sbatch`` records the script), each grouped under one MLflow parent run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT
from vldac_lightning.utils import sweep_records as records

pytestmark = pytest.mark.slow

SMOKE = ["debug=smoke", "env.max_episode_steps=3"]


def run_train(args: list[str], tmp_path: Path, extra_env: dict[str, str] | None = None) -> tuple[Any, str]:
    """``python -m vldac_lightning.train -m <args>`` with MLflow and all outputs under tmp_path."""
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
           **(extra_env or {})}
    proc = subprocess.run([sys.executable, "-m", "vldac_lightning.train", "-m", *args,
                           f"paths.log_dir={tmp_path / 'logs'}"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    return proc, uri


def parent_and_children(uri: str) -> tuple[Any, list[Any]]:
    """The one run without a parent, and its children ordered by job number."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("vldac_lightning")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if records.PARENT_TAG not in r.data.tags]
    assert len(parents) == 1, [r.info.run_name for r in parents]
    children = sorted((r for r in runs if records.PARENT_TAG in r.data.tags), key=lambda r: int(r.data.tags["sweep.job"]))
    assert all(r.data.tags[records.PARENT_TAG] == parents[0].info.run_id for r in children)
    assert all(r.data.tags[records.SWEEP_ID_TAG] == parents[0].data.tags[records.SWEEP_ID_TAG] for r in children)
    return parents[0], children


def job_table(uri: str, run_id: str, tmp_path: Path) -> list[dict[str, Any]]:
    import mlflow

    path = mlflow.MlflowClient(tracking_uri=uri).download_artifacts(run_id, "sweep/jobs.json", str(tmp_path))
    table = json.loads(Path(path).read_text())
    return [dict(zip(table["columns"], row)) for row in table["data"]]


def test_parallel_joblib_sweep_is_one_parent_with_a_child_per_job(tmp_path: Path) -> None:
    proc, uri = run_train(["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *SMOKE, "seed=0,1"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "Joblib.Parallel(n_jobs=2" in proc.stdout + proc.stderr  # the jobs went through joblib's pool

    parent, children = parent_and_children(uri)
    assert [r.data.tags["sweep.job"] for r in children] == ["0", "1"]
    assert [r.data.params["seed"] for r in children] == ["0", "1"]
    assert all(r.info.status == "FINISHED" for r in [parent, *children])
    assert parent.data.params["sweep.launcher"] == "JoblibLauncher"
    values = [r.data.metrics["eval/success_rate"] for r in children]  # the last evaluation = what the job returned
    rows = job_table(uri, parent.info.run_id, tmp_path)
    assert [(r["job"], r["status"], r["value"], r["run_id"]) for r in rows] == [
        (i, "COMPLETED", values[i], children[i].info.run_id) for i in (0, 1)]
    assert "seed=1" in rows[1]["overrides"].split()
    assert parent.data.metrics["best/eval/success_rate"] == max(values)
    best = values.index(max(values))  # the first of equal values
    assert parent.data.tags["best.run_id"] == children[best].info.run_id
    assert parent.data.params["best.seed"] == str(best)


def test_optuna_sweep_records_its_trials_and_the_best_point(tmp_path: Path) -> None:
    proc, uri = run_train(["hparams_search=optuna", "hydra.sweeper.n_trials=3", *SMOKE], tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]

    parent, children = parent_and_children(uri)
    assert len(children) == 3 and all(r.info.status == "FINISHED" for r in [parent, *children])
    assert parent.data.params["sweep.sweeper"] == "OptunaSweeper"
    assert parent.data.params["sweep.sampler_seed"] == "0"
    # Each trial trained with the values Optuna drew, inside the search space.
    lrs = [float(r.data.params["optimizer.lr"]) for r in children]
    assert len(set(lrs)) == 3 and all(1e-5 <= lr <= 3e-3 for lr in lrs)
    assert all(0.0 <= float(r.data.params["algo.kl_beta"]) <= 0.2 for r in children)
    assert all(0.05 <= float(r.data.params["algo.value_coef"]) <= 0.5 for r in children)
    # The parent's best agrees with Optuna's own result.
    (result_file,) = (tmp_path / "logs").glob("train/multiruns/*/optimization_results.yaml")
    result = yaml.safe_load(result_file.read_text())
    assert parent.data.metrics["best/eval/success_rate"] == result["best_value"]
    assert {k: float(parent.data.params[f"best.{k}"]) for k in result["best_params"]} == result["best_params"]
    rows = job_table(uri, parent.info.run_id, tmp_path)
    assert [r["run_id"] for r in rows] == [r.info.run_id for r in children]
    assert [r["value"] for r in rows] == [r.data.metrics["eval/success_rate"] for r in children]


def test_slurm_submission_asks_for_one_task_per_gpu_on_every_node(tmp_path: Path) -> None:
    """No cluster here: a stand-in ``sbatch`` keeps the script submitit wrote and refuses the job, so the
    sweep fails right after submission — and its MLflow parent run is closed as FAILED."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    sbatch = bin_dir / "sbatch"
    sbatch.write_text(f'#!/bin/sh\nfor a; do last="$a"; done\ncp "$last" {tmp_path}/submitted.sh\n'
                      'echo "sbatch: error: no cluster here" >&2\nexit 1\n')
    sbatch.chmod(0o755)
    srun = bin_dir / "srun"  # submitit checks that it exists; the refused job never runs it
    srun.write_text("#!/bin/sh\nexit 1\n")
    srun.chmod(0o755)
    proc, uri = run_train(["hydra/launcher=slurm", "hydra.launcher.partition=big", "trainer=gpu",
                           "trainer.devices=8", "++trainer.num_nodes=2", "seed=0,1"], tmp_path,
                          {"PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert proc.returncode != 0 and "no cluster here" in proc.stderr
    script = (tmp_path / "submitted.sh").read_text()
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=8", "#SBATCH --gpus-per-node=8",
                 "#SBATCH --partition=big", "#SBATCH --array=0-1%2"):  # 2 jobs, both at once
        assert line in script.splitlines(), (line, script)
    parent, children = parent_and_children(uri)
    assert parent.info.status == "FAILED" and children == []


@pytest.mark.parametrize("launcher", ["basic", "joblib"])
def test_an_invalid_job_fails_alone_and_every_job_is_in_the_table(tmp_path: Path, launcher: str) -> None:
    """Job 0's Config error used to end the sweep (exit 2, '0 jobs'): job 1 never ran."""
    extra = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=1"] if launcher == "joblib" else []
    proc, uri = run_train([*extra, *SMOKE, "algo.minibatch_size=0,4"], tmp_path)
    assert proc.returncode == 1  # the sweep reports the failure...
    parent, children = parent_and_children(uri)
    assert [r.data.tags["sweep.job"] for r in children] == ["1"]  # ...after the valid job ran
    assert children[0].info.status == "FINISHED" and parent.info.status == "FAILED"
    rows = job_table(uri, parent.info.run_id, tmp_path)
    assert [(r["job"], r["status"]) for r in rows] == [(0, "FAILED"), (1, "COMPLETED")]
    assert rows[0]["error"] == "ConfigError: algo.minibatch_size=0 must be >= 1"
    assert "Sweep: 2 job(s): 1 completed, 1 failed" in proc.stdout
    assert "job 0 FAILED: algo.minibatch_size=0" in proc.stdout


def test_a_stopped_sweep_closes_its_parent_and_says_what_is_left(tmp_path: Path) -> None:
    """SIGTERM in job 0 of three: the parent run used to stay RUNNING with no table, jobs 1-2 silently lost."""
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
           "PYTHONPATH": str(ROOT), "VLDAC_TEST_SIGNAL": "TERM", "VLDAC_TEST_SIGNAL_AT": "optimizer_step:2"}
    hook = Path(__file__).with_name("signal_hook.py")
    proc = subprocess.run([sys.executable, str(hook), "-m", *SMOKE, "seed=0,1,2", f"paths.log_dir={tmp_path / 'logs'}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 143, proc.stderr[-3000:]
    parent, children = parent_and_children(uri)
    assert parent.info.status == "KILLED" and [r.info.status for r in children] == ["KILLED"]
    rows = job_table(uri, parent.info.run_id, tmp_path)
    assert [(r["job"], r["status"]) for r in rows] == [(0, "STOPPED"), (1, "NOT_RUN"), (2, "NOT_RUN")]
    out = proc.stdout
    assert "Resume with: python -m vldac_lightning.train" in out and "The sweep was stopped by SIGTERM" in out
    assert "Run job 2: python -m vldac_lightning.train" in out and "seed=2" in out.split("Run job 2:")[1]
