"""A tracking-store outage costs a run nothing but its MLflow record: training finishes with its
checkpoint, evaluation prints and saves its metrics, and the losses are warned about and counted."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

SMOKE = ["debug=smoke", "env.max_episode_steps=3"]
GUARDED = ("log_batch", "log_artifacts", "log_text", "set_terminated")


class Outage:
    """Makes MLflow's client fail like a killed server from the first metrics it sends on: for one
    call (``back_after_one``: the store is back by the run's end) or for the rest of the run."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, back_after_one: bool) -> None:
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        self.failing = False
        self.failures = 0
        for name in GUARDED:
            original = getattr(MlflowClient, name)

            def method(client: Any, *args: Any, _original: Callable[..., Any] = original, _name: str = name,
                       **kwargs: Any) -> Any:
                if _name == "log_batch" and kwargs.get("metrics") and self.failures == 0:
                    self.failing = True  # the run and its params exist; the metrics start the outage
                if self.failing:
                    self.failures += 1
                    self.failing = not back_after_one
                    raise MlflowException("API request to http://127.0.0.1:5000/api/2.0/mlflow/runs/log-batch failed "
                                          "with exception Max retries exceeded (Connection refused)")
                return _original(client, *args, **kwargs)

            monkeypatch.setattr(MlflowClient, name, method)


@pytest.mark.parametrize("back_after_one", [True, False], ids=["store_back_at_the_end", "store_never_back"])
def test_training_survives_a_store_outage(back_after_one: bool, compose_train_cfg: Callable[..., Any],
                                          mlflow_uri: str, monkeypatch: pytest.MonkeyPatch,
                                          caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    from mlflow import MlflowClient

    from vldac_lightning.train import train
    from vldac_lightning.utils.resilient_mlflow import EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND

    # Retry only at the run's end, whatever the machine's speed.
    cfg = compose_train_cfg([*SMOKE, "logger.mlflow.retry_interval_s=3600"])
    with monkeypatch.context() as mp:
        outage = Outage(mp, back_after_one)
        with caplog.at_level(logging.WARNING):
            metrics, objects = train(cfg)
    out = capsys.readouterr().out

    assert 0.0 <= metrics["eval/success_rate"] <= 1.0 and objects["trainer"].global_step == 4
    assert outage.failures >= 1
    logger = objects["loggers"][0]
    warnings = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
    assert warnings and mlflow_uri in warnings[0]
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    assert last.is_file() and f"last: {last}" in out and logger.run_id in out

    client = MlflowClient(mlflow_uri)
    run = client.get_run(logger.run_id)
    assert run.info.run_name == "numberline-debug=smoke-max_episode_steps=3-seed0"
    assert client.get_experiment(run.info.experiment_id).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND
    assert run.data.params.get("algo.kl_beta") == "0.05"  # logged before the outage
    if back_after_one:
        # Every metric kept during the outage arrived at the end; the sample images were lost and counted.
        assert run.info.status == "FINISHED"
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "train/value_loss"))
        assert steps == [8, 16]
        assert run.data.metrics["logger/outages"] == 1.0 and run.data.metrics["logger/dropped_metrics"] == 0.0
        assert run.data.metrics["logger/dropped_artifacts"] > 0
        assert logger.client.sent_late > 0
    else:
        # Nothing after the first metrics reached the store; the run says so and was not marked finished.
        assert run.info.status == "RUNNING"
        assert "train/value_loss" not in run.data.metrics
        assert logger.client.dropped["metrics"] > 0 and logger.client.dropped["status"] == 1
        assert "still down" in out


def test_evaluate_with_an_unreachable_store_prints_and_saves_the_metrics(
        compose_train_cfg: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str]) -> None:
    from vldac_lightning.evaluate import RESULTS_FILE, evaluate

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens on port 9
    cfg = compose_train_cfg(["debug=smoke", "num_episodes=2"], config_name="evaluate.yaml")
    with caplog.at_level(logging.WARNING):
        metrics = evaluate(cfg)
    out = capsys.readouterr().out
    assert metrics["eval/episodes"] == 2
    assert f"eval/success_rate: {metrics['eval/success_rate']:.4f}" in out
    results = Path(cfg.paths.output_dir) / RESULTS_FILE
    assert f"Results: {results}" in out
    assert json.loads(results.read_text())["metrics"] == pytest.approx(metrics, nan_ok=True)
    assert any("not logged to MLflow" in r.getMessage() and "127.0.0.1:9" in r.getMessage() for r in caplog.records)
