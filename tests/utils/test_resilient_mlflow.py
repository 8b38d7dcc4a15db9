"""The MLflow logger under a tracking-store outage: writes never raise, the store is retried at most
once per interval, metrics are kept and sent when it is back, losses are counted and logged."""

from __future__ import annotations

import http.server
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vldac_lightning.utils.resilient_mlflow import (
    EXPERIMENT_KIND_TAG,
    MODEL_TRAINING_KIND,
    ResilientClient,
    ResilientMLFlowLogger,
)


@pytest.fixture(autouse=True)
def http_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The logger's HTTP defaults (it sets them only where unset), restored after each test."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")


class FakeClient:
    """Records writes; raises a transport error (as MLflow's REST client does) while ``down``."""

    def __init__(self) -> None:
        self.down = False
        self.calls = 0
        self.metrics: list[Any] = []
        self.params: list[Any] = []
        self.artifacts: list[str] = []

    def _check(self) -> None:
        self.calls += 1
        if self.down:
            from mlflow.exceptions import MlflowException

            raise MlflowException("API request to http://store/api/2.0/mlflow/runs/log-batch failed with exception "
                                  "Max retries exceeded (Connection refused)")

    def log_batch(self, run_id: str, metrics: Any = (), params: Any = (), tags: Any = (), **_: Any) -> None:
        self._check()
        self.metrics += list(metrics)
        self.params += list(params)

    def log_artifacts(self, run_id: str, local_dir: str, artifact_path: str | None = None) -> None:
        self._check()
        self.artifacts.append(local_dir)

    def set_terminated(self, run_id: str, status: str | None = None, end_time: int | None = None) -> None:
        self._check()


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def metric(key: str, step: int, value: float = 1.0) -> Any:
    from mlflow.entities import Metric

    return Metric(key, value, 0, step)


@pytest.fixture
def fake() -> tuple[FakeClient, Clock, ResilientClient]:
    inner, clock = FakeClient(), Clock()
    return inner, clock, ResilientClient(inner, "http://store", retry_interval_s=60, max_buffered_metrics=5,
                                         clock=clock)


def test_an_outage_is_warned_once_and_retried_less_and_less_often(fake: Any, caplog: pytest.LogCaptureFixture) -> None:
    inner, clock, client = fake
    inner.down = True
    with caplog.at_level(logging.WARNING):
        client.log_batch("run", metrics=[metric("a", 8)])
        assert inner.calls == 1 and client.down
        clock.now = 59.0  # inside the retry interval: the store is not called at all
        client.log_batch("run", metrics=[metric("a", 16)])
        client.log_artifacts("run", str(Path(__file__).parent))
        assert inner.calls == 1
        clock.now = 61.0  # one new attempt, which fails: still one warning
        client.log_batch("run", metrics=[metric("a", 24)])
        assert inner.calls == 2
        clock.now = 61.0 + 119.0  # the wait doubled to 120 s
        client.log_batch("run", metrics=[metric("a", 32)])
        assert inner.calls == 2
        clock.now = 61.0 + 121.0
        client.log_batch("run", metrics=[metric("a", 40)])
        assert inner.calls == 3
    warnings = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(warnings) == 1 and "http://store" in warnings[0], warnings
    assert client.buffered_metrics == 5 and client.dropped["artifacts"] >= 1 and client.outages == 1


def test_kept_metrics_are_sent_when_the_store_is_back_and_losses_logged(fake: Any) -> None:
    inner, clock, client = fake
    inner.down = True
    for step in range(7):  # 7 values, room for 5: 2 lost
        client.log_batch("run", metrics=[metric("a", step)])
        clock.now += 1.0
    assert client.buffered_metrics == 5 and client.dropped["metrics"] == 2
    inner.down = False
    clock.now += 60.0
    client.log_batch("run", metrics=[metric("a", 100)])
    assert not client.down
    sent = {(m.key, m.step): m.value for m in inner.metrics}
    assert [s for (k, s) in sent if k == "a"] == [0, 1, 2, 3, 4, 100]  # in order, the overflow lost
    assert sent[("logger/dropped_metrics", 100)] == 2.0 and sent[("logger/outages", 100)] == 1.0
    assert client.sent_late == 5


def test_close_run_tries_once_more_and_counts_what_is_still_kept_as_lost(fake: Any,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    inner, clock, client = fake
    inner.down = True
    client.log_batch("run", metrics=[metric("a", 1), metric("b", 1)])
    calls = inner.calls
    with caplog.at_level(logging.WARNING):
        client.close_run("run")  # inside the retry interval, but the run's end forces one attempt
    assert inner.calls == calls + 1
    assert client.dropped["metrics"] == 2 and client.buffered_metrics == 0
    assert any("outage" in r.getMessage() for r in caplog.records)


def test_a_refused_request_is_dropped_without_starting_an_outage(fake: Any) -> None:
    from mlflow.exceptions import RestException

    inner, _, client = fake

    def refuse(*_: Any, **__: Any) -> None:
        raise RestException({"error_code": "INVALID_PARAMETER_VALUE", "message": "param changed"})

    inner.log_batch = refuse  # type: ignore[method-assign]
    client.log_batch("run", params=[])
    assert not client.down and client.buffered_metrics == 0


# ------------------------------------------------------------------------- a real broken server
class _Broken(http.server.BaseHTTPRequestHandler):
    """Answers every MLflow REST call with HTTP 500, or drops the connection."""

    mode = "500"

    def _answer(self) -> None:
        if self.mode == "close":
            self.close_connection = True
            self.connection.close()
            return
        body = b'{"error_code": "INTERNAL_ERROR", "message": "broken"}'
        self.send_response(500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def broken_server() -> Iterator[tuple[str, type[_Broken]]]:
    handler = type("Handler", (_Broken,), {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("mode", ["500", "close"])
def test_a_broken_http_server_costs_one_bounded_attempt(broken_server: Any, mode: str) -> None:
    from mlflow import MlflowClient

    uri, handler = broken_server
    handler.mode = mode
    client = ResilientClient(MlflowClient(uri), uri, retry_interval_s=3600)
    started = time.monotonic()
    client.log_batch("0123", metrics=[metric("a", 1)])
    client.log_artifacts("0123", str(Path(__file__).parent))
    client.set_terminated("0123", "FINISHED")
    elapsed = time.monotonic() - started
    assert client.down and client.buffered_metrics == 1 and client.dropped["artifacts"] >= 1
    assert client.dropped["status"] == 1
    # MLflow's defaults (7 retries, exponential backoff) take ≈ 255 s per call on a dead server.
    assert elapsed < 60, f"{elapsed:.0f} s"


# ------------------------------------------------------------------------- a real SQLite store
@pytest.fixture(scope="module")
def sqlite_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def test_the_experiment_is_tagged_as_model_training_unless_the_user_chose(sqlite_uri: str, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    logger = ResilientMLFlowLogger(experiment_name="kind", tracking_uri=sqlite_uri,
                                   artifact_location=str(tmp_path / "artifacts"), run_name="r")
    logger.log_metrics({"a": 1.0}, step=1)
    client = MlflowClient(sqlite_uri)
    experiment = client.get_experiment(logger.experiment_id)
    assert experiment.tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND
    # An experiment found without the tag gets it; one the user set to another kind keeps it.
    client.delete_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG)
    ResilientMLFlowLogger(experiment_name="kind", tracking_uri=sqlite_uri).log_metrics({"a": 2.0}, step=2)
    assert client.get_experiment(experiment.experiment_id).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND
    client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, "finetuning")
    ResilientMLFlowLogger(experiment_name="kind", tracking_uri=sqlite_uri).log_metrics({"a": 3.0}, step=3)
    assert client.get_experiment(experiment.experiment_id).tags[EXPERIMENT_KIND_TAG] == "finetuning"


def test_finalize_after_an_outage_logs_the_counts_and_the_status(sqlite_uri: str, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    logger = ResilientMLFlowLogger(experiment_name="outage", tracking_uri=sqlite_uri,
                                   artifact_location=str(tmp_path / "artifacts"), retry_interval_s=3600)
    logger.log_metrics({"a": 1.0}, step=1)
    inner = logger.client._client
    original = inner.log_batch
    down = {"on": True}

    def flaky(*args: Any, **kwargs: Any) -> Any:
        if down["on"]:
            raise MlflowException("API request failed with exception Connection refused")
        return original(*args, **kwargs)

    monkeypatch.setattr(inner, "log_batch", flaky)
    logger.log_metrics({"a": 2.0}, step=2)
    logger.log_metrics({"a": 3.0}, step=3)  # inside the interval: kept without a call
    down["on"] = False
    logger.finalize("success")
    run = MlflowClient(sqlite_uri).get_run(logger.run_id)
    history = MlflowClient(sqlite_uri).get_metric_history(logger.run_id, "a")
    assert sorted(m.step for m in history) == [1, 2, 3]
    assert run.data.metrics["logger/outages"] == 1.0
    assert run.data.metrics["logger/dropped_metrics"] == 0.0  # kept, then sent
    assert run.info.status == "FINISHED"
