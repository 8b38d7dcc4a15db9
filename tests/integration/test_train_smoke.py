"""End to end on the tiny model: train(cfg) with debug=smoke, MLflow contents, the checkpoint,
evaluate(cfg) from that checkpoint, and a Hydra multirun in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.conftest import ROOT, compose_config, reset_hydra

pytestmark = pytest.mark.slow

# Smoke = 2 iterations of 8 env steps (4 per env). A NumberLine episode of the random tiny policy
# usually outlasts 4 steps, so a 3-step time limit makes episodes end inside every rollout and the
# rollout/* episode metrics exist (a rollout with no finished episode logs none).
SMOKE = ["debug=smoke", "env.max_episode_steps=3"]
REQUIRED_METRICS = ("eval/success_rate", "rollout/success_rate", "train/value_loss", "train/policy_loss", "train/kl")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One smoke training run shared by the tests below (it is the expensive part)."""
    from vldac_lightning.models.module import ActorCriticModule
    from vldac_lightning.train import train

    tmp = tmp_path_factory.mktemp("smoke")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    snapshot: dict[str, Any] = {}
    original = ActorCriticModule.configure_model

    def configure_model(self: ActorCriticModule) -> None:
        first = self.policy is None
        original(self)
        if first:  # the weights exactly as training starts from them
            snapshot["params"] = {n: p.detach().clone() for n, p in self.named_parameters()}
            snapshot["trainable"] = {n for n, p in self.named_parameters() if p.requires_grad}

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setattr(ActorCriticModule, "configure_model", configure_model)
        cfg = compose_config(SMOKE, log_dir=tmp / "logs", output_dir=tmp / "out")
        try:
            metrics, objects = train(cfg)
        finally:
            reset_hydra()
    return {"tmp": tmp, "uri": uri, "metrics": metrics, "objects": objects, "snapshot": snapshot}


def mlflow_runs(uri: str) -> list[Any]:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("vldac_lightning")
    assert experiment is not None, "no MLflow experiment 'vldac_lightning'"
    return client.search_runs([experiment.experiment_id])


def test_train_completes_with_an_evaluation(smoke_run: Any) -> None:
    metrics = smoke_run["metrics"]
    assert 0.0 <= metrics["eval/success_rate"] <= 1.0
    assert "eval/initial_success_rate" in metrics
    trainer = smoke_run["objects"]["trainer"]
    # 2 iterations × (2 epochs × 8/4 minibatches / 2 accumulation) = 4 optimizer steps.
    assert trainer.global_step == 4


def test_every_trainable_parameter_changed_and_nothing_else(smoke_run: Any) -> None:
    module = smoke_run["objects"]["module"]
    before, trainable = smoke_run["snapshot"]["params"], smoke_run["snapshot"]["trainable"]
    assert trainable and any("lora_A" in n for n in trainable) and any("value_head" in n for n in trainable)
    params = dict(module.named_parameters())
    assert set(params) == set(before)
    unchanged = [n for n in trainable if torch.equal(params[n].detach(), before[n])]
    assert not unchanged, f"{len(unchanged)} trainable tensors never changed, e.g. {unchanged[:3]}"
    moved = [n for n in set(params) - trainable if not torch.equal(params[n].detach(), before[n])]
    assert not moved, f"frozen backbone weights changed: {moved[:3]}"


def test_mlflow_holds_the_run(smoke_run: Any) -> None:
    import mlflow

    runs = mlflow_runs(smoke_run["uri"])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    missing = [k for k in REQUIRED_METRICS if k not in run.data.metrics]
    assert not missing, f"metrics missing from MLflow: {missing}"
    assert run.data.params.get("algo.kl_beta") == "0.05"
    client = mlflow.MlflowClient(tracking_uri=smoke_run["uri"])
    # The MLflow UI opens a model-training experiment on its runs, not on the GenAI pages.
    assert client.get_experiment(run.info.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    assert "config/config.yaml" in [a.path for a in client.list_artifacts(run.info.run_id, "config")]
    # x-axis = environment steps (docs/metrics.md#conventions): two 8-step rollouts; evaluation before training and at the end.
    history = {k: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, k)]
               for k in ("train/value_loss", "train/policy_frozen", "eval/success_rate")}
    assert sorted(s for s, _ in history["train/value_loss"]) == [8, 16]
    # Value warm-up (debug=smoke: 1 iteration): the policy is frozen in iteration 0 only.
    assert sorted(history["train/policy_frozen"]) == [(8, 1.0), (16, 0.0)]
    assert {0, 16} <= {s for s, _ in history["eval/success_rate"]}
    # All MLflow data stayed in the test's directory.
    artifact_dir = Path(run.info.artifact_uri.removeprefix("file://"))
    assert smoke_run["tmp"] in artifact_dir.parents


def test_last_checkpoint_holds_only_the_trainable_tensors(smoke_run: Any) -> None:
    ckpt_path = smoke_run["tmp"] / "out" / "checkpoints" / "last.ckpt"
    assert ckpt_path.is_file()
    state = torch.load(ckpt_path, map_location="cpu", weights_only=True)["state_dict"]
    module = smoke_run["objects"]["module"]
    trainable = {n: p for n, p in module.named_parameters() if p.requires_grad}
    assert set(state) == set(trainable)
    for name, tensor in state.items():
        torch.testing.assert_close(tensor, trainable[name].detach(), atol=0, rtol=0)


def test_evaluate_from_the_checkpoint(smoke_run: Any, compose_train_cfg: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import vldac_lightning.evaluate as evaluate_mod

    ckpt_path = smoke_run["tmp"] / "out" / "checkpoints" / "last.ckpt"
    loaded: dict[str, Any] = {}
    original = evaluate_mod.load_trainable_state

    def spy(module: Any, path: Any) -> int:
        loaded["n"] = original(module, path)
        loaded["module"] = module
        return loaded["n"]

    monkeypatch.setattr(evaluate_mod, "load_trainable_state", spy)
    cfg = compose_train_cfg(["debug=smoke", f"ckpt_path={ckpt_path}", "num_episodes=4"], config_name="evaluate.yaml")
    metrics = evaluate_mod.evaluate(cfg)
    assert 0.0 <= metrics["eval/success_rate"] <= 1.0
    assert metrics["eval/episodes"] == 4
    trained = {n: p for n, p in smoke_run["objects"]["module"].named_parameters() if p.requires_grad}
    assert loaded["n"] == len(trained)
    evaluated = dict(loaded["module"].named_parameters())
    for name, p in trained.items():
        torch.testing.assert_close(evaluated[name].detach(), p.detach(), atol=0, rtol=0)


def test_evaluate_warns_when_the_env_differs_from_the_checkpoints(smoke_run: Any, compose_train_cfg: Any,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    import json
    import logging

    from vldac_lightning.evaluate import RESULTS_FILE, evaluate

    ckpt_path = smoke_run["tmp"] / "out" / "checkpoints" / "last.ckpt"
    # Trained with env.max_episode_steps=3; batching knobs (env.num_envs) are not differences.
    cfg = compose_train_cfg(["debug=smoke", f"ckpt_path={ckpt_path}", "num_episodes=2", "env.max_episode_steps=4",
                             "env.num_envs=1"], config_name="evaluate.yaml")
    with caplog.at_level(logging.WARNING):
        evaluate(cfg)
    warnings = [r.getMessage() for r in caplog.records if "differs from the one it was trained with" in r.getMessage()]
    assert len(warnings) == 1 and "env.max_episode_steps: 3 (checkpoint) -> 4 (now)" in warnings[0]
    saved = json.loads((Path(cfg.paths.output_dir) / RESULTS_FILE).read_text())
    assert saved["differs_from_checkpoint"] == {"env.max_episode_steps": [3, 4]}


def test_hydra_multirun_sweep(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, "-m", "vldac_lightning.train", "-m", "algo.kl_beta=0.05,0.15", *SMOKE,
         f"paths.log_dir={tmp_path / 'logs'}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    # The sweep's MLflow parent run (docs/config.md#mlflow-parent-runs) and its two jobs' runs.
    parent, *others = sorted(mlflow_runs(uri), key=lambda r: "mlflow.parentRunId" in r.data.tags)
    runs = [r for r in others if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(runs) == 2 and len(others) == 2
    assert sorted(r.data.params["algo.kl_beta"] for r in runs) == ["0.05", "0.15"]
    assert all(r.info.status == "FINISHED" and "eval/success_rate" in r.data.metrics for r in runs)
    # Each job's run is named after what it changed, with its job number (MLflow's random names repeat).
    assert sorted(r.info.run_name for r in runs) == [
        "numberline-kl_beta=0.05-debug=smoke-max_episode_steps=3-seed0-job0",
        "numberline-kl_beta=0.15-debug=smoke-max_episode_steps=3-seed0-job1"]
    # Every job says where its checkpoint and MLflow run are.
    assert proc.stdout.count("Checkpoints: ") == 2 and proc.stdout.count("MLflow: run numberline-kl_beta=") == 2
    # Each job writes its own checkpoints (sweep subdirs 0 and 1).
    ckpts = sorted(p.relative_to(tmp_path / "logs") for p in (tmp_path / "logs").glob("**/checkpoints/last.ckpt"))
    assert len(ckpts) == 2 and {p.parts[-3] for p in ckpts} == {"0", "1"}, ckpts
