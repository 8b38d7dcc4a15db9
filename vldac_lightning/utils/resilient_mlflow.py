"""An MLflow logger that a tracking-store outage cannot stop or stall.

Lightning's ``MLFlowLogger`` calls the store synchronously, and MLflow's HTTP client retries a dead
server for about 255 s per call (7 retries with exponential backoff) before it raises — which then
crashes the run. Here every write goes through :class:`ResilientClient`:

- HTTP calls are bounded by MLflow's own settings (``MLFLOW_HTTP_REQUEST_TIMEOUT`` /
  ``MLFLOW_HTTP_REQUEST_MAX_RETRIES``; the logger sets short defaults, the environment wins).
- The first failure starts an *outage*, warned about once. During an outage the store is tried
  again after ``retry_interval_s``, then after twice as long each time (up to 10×); in between,
  writes return at once. So a dead server costs nothing and a hung one one timeout per try.
- Metrics and params are kept (up to ``max_buffered_metrics`` values) and sent when the store is
  back; artifacts, tags and status updates are dropped. Everything lost is counted and logged as
  ``logger/dropped_*`` when the store comes back and when the run ends.

See docs/troubleshooting.md ("MLflow").
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from lightning.pytorch.loggers import MLFlowLogger

log = logging.getLogger(__name__)

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
# The value MLflow 3's UI stores for "Machine learning" experiments (its other main kind,
# "genai_development", opens on traces and judges instead of the runs' charts).
MODEL_TRAINING_KIND = "custom_model_development"
# MLflow's REST limits per log_batch call.
# During an outage the wait between tries doubles, up to this many retry intervals.
_MAX_INTERVAL_FACTOR = 10
# What an outage can lose, each counted and logged as logger/dropped_<kind>.
LOSS_KINDS = ("metrics", "params", "artifacts", "tags", "status")
_MAX_METRICS_PER_BATCH = 1000
_MAX_PARAMS_PER_BATCH = 100


def set_http_defaults(timeout_s: int, max_retries: int) -> None:
    """Short MLflow HTTP timeouts unless the environment already sets them (MLflow reads these
    variables on every request; its defaults, 120 s and 7 retries, stall a run for minutes)."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(timeout_s)))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(int(max_retries)))


def is_rejection(exc: BaseException) -> bool:
    """The store answered and refused this request (a 4xx other than 429): retrying cannot help,
    and the store is not down."""
    from mlflow.exceptions import RestException

    if not isinstance(exc, RestException):
        return False
    status = exc.get_http_status_code()
    return 400 <= status < 500 and status != 429


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _count_files(path: str) -> int:
    return sum(len(files) for _, _, files in os.walk(path)) or 1


class ResilientClient:
    """Wraps an ``MlflowClient``: writes never raise and never block past the HTTP bounds; reads
    (``get_run``, ``create_run`` …) pass through unchanged and may raise."""

    def __init__(self, client: Any, tracking_uri: str, *, retry_interval_s: float = 60.0,
                 max_buffered_metrics: int = 50_000, clock: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self.tracking_uri = tracking_uri
        self.retry_interval_s = float(retry_interval_s)
        self.max_buffered_metrics = int(max_buffered_metrics)
        self._clock = clock
        self.down_since: float | None = None
        self._next_try = 0.0
        self._interval = self.retry_interval_s
        self.outages = 0
        self.dropped: Counter[str] = Counter()  # LOSS_KINDS -> items lost for good
        self.sent_late = 0  # metric values kept during an outage and sent afterwards
        self._metrics: dict[str, list[Any]] = defaultdict(list)  # run_id -> kept Metric entities
        self._params: dict[str, list[Any]] = defaultdict(list)
        self._last_step: dict[str, int] = {}
        self._report_due: set[str] = set()  # runs whose dropped counts changed since last logged

    def __getattr__(self, name: str) -> Any:  # reads and anything not guarded below
        if name == "_client" or name.startswith("__"):  # copy/pickle probe before __init__ ran
            raise AttributeError(name)
        return getattr(self._client, name)

    # ------------------------------------------------------------------------------- state
    @property
    def down(self) -> bool:
        return self.down_since is not None

    @property
    def buffered_metrics(self) -> int:
        return sum(len(v) for v in self._metrics.values())

    def try_now(self) -> None:
        """Let the next write try the store even inside the retry interval (used at the run's end)."""
        self._next_try = 0.0

    def _may_try(self) -> bool:
        return not self.down or self._clock() >= self._next_try

    def _attempt(self, what: str, fn: Callable[[], Any]) -> bool:
        """Run one store call. True when the store answered (done, or refused with a warning);
        False when it is unreachable (an outage starts or goes on)."""
        try:
            fn()
        except Exception as exc:  # transport errors come as MlflowException, OSError, requests errors…
            if is_rejection(exc):
                log.warning("MLflow refused %s (dropped): %s", what, _short(exc))
                self._recovered()
                return True
            self._failed(what, exc)
            return False
        self._recovered()
        return True

    def _failed(self, what: str, exc: BaseException) -> None:
        now = self._clock()
        if self.down:
            # A long outage is tried less and less often: a hung server costs one timeout per try.
            self._interval = min(self._interval * 2, _MAX_INTERVAL_FACTOR * self.retry_interval_s)
            self._next_try = now + self._interval
            return
        self._interval = self.retry_interval_s
        self._next_try = now + self._interval
        self.down_since = now
        self.outages += 1
        log.warning(
            "MLflow tracking store %s is unreachable (%s failed: %s). Training continues: metrics and params are "
            "kept (up to %d values) and sent when it is back; artifacts, tags and status updates are dropped "
            "and counted (logger/dropped_*). Next attempt in %.0f s.",
            self.tracking_uri, what, _short(exc), self.max_buffered_metrics, self.retry_interval_s)

    def _recovered(self) -> None:
        if not self.down:
            return
        assert self.down_since is not None
        log.warning("MLflow tracking store %s is back after %.0f s; sending %d kept metric values (lost so far: %s)",
                    self.tracking_uri, self._clock() - self.down_since, self.buffered_metrics,
                    dict(self.dropped) or "nothing")
        self.down_since = None

    # ------------------------------------------------------------------------------- metrics and params
    def _keep(self, run_id: str, metrics: list[Any], params: list[Any]) -> None:
        room = max(self.max_buffered_metrics - self.buffered_metrics, 0)
        self._metrics[run_id].extend(metrics[:room])
        self._params[run_id].extend(params)
        if len(metrics) > room:
            self._lose(run_id, "metrics", len(metrics) - room)

    def _flush(self) -> bool:
        """Send what was kept during an outage; False (the rest still kept) if the store is down."""
        for run_id in list(self._params):
            while self._params[run_id]:
                chunk = self._params[run_id][:_MAX_PARAMS_PER_BATCH]
                if not self._attempt("log_batch", lambda c=chunk, r=run_id: self._client.log_batch(r, params=c)):
                    return False
                del self._params[run_id][: len(chunk)]
            del self._params[run_id]
        for run_id in list(self._metrics):
            while self._metrics[run_id]:
                chunk = self._metrics[run_id][:_MAX_METRICS_PER_BATCH]
                if not self._attempt("log_batch", lambda c=chunk, r=run_id: self._client.log_batch(r, metrics=c)):
                    return False
                del self._metrics[run_id][: len(chunk)]
                self.sent_late += len(chunk)
            del self._metrics[run_id]
        for run_id in list(self._report_due):
            self._report_due.discard(run_id)
            self._log_losses(run_id)
        return True

    def _log_losses(self, run_id: str) -> None:
        """Log the lost-item counts as metrics, so a run's record says what it is missing."""
        from mlflow.entities import Metric

        now_ms, step = int(time.time() * 1000), self._last_step.get(run_id, 0)
        values = {f"logger/dropped_{kind}": float(self.dropped[kind]) for kind in LOSS_KINDS}
        values["logger/outages"] = float(self.outages)
        metrics = [Metric(key=k, value=v, timestamp=now_ms, step=step) for k, v in values.items()]
        if not self._attempt("log_batch", lambda: self._client.log_batch(run_id, metrics=metrics)):
            self._report_due.add(run_id)

    def log_batch(self, run_id: str, metrics: Iterable[Any] = (), params: Iterable[Any] = (),
                  tags: Iterable[Any] = (), **kwargs: Any) -> None:
        metrics, params, tags = list(metrics), list(params), list(tags)
        if metrics:
            self._last_step[run_id] = max([self._last_step.get(run_id, 0), *(m.step for m in metrics)])
        if self._may_try() and self._flush() and self._attempt(
                "log_batch", lambda: self._client.log_batch(run_id, metrics=metrics, params=params, tags=tags,
                                                            **kwargs)):
            return
        self._keep(run_id, metrics, params)
        if tags:
            self._lose(run_id, "tags", len(tags))

    def log_metric(self, run_id: str, key: str, value: float, timestamp: int | None = None, step: int | None = None,
                   **_: Any) -> None:
        from mlflow.entities import Metric

        self.log_batch(run_id, metrics=[Metric(key, float(value), timestamp or int(time.time() * 1000), step or 0)])

    def log_param(self, run_id: str, key: str, value: Any, **_: Any) -> None:
        from mlflow.entities import Param

        self.log_batch(run_id, params=[Param(key, str(value))])

    # ------------------------------------------------------------------------------- dropped when down
    def _lose(self, run_id: str | None, kind: str, n: int) -> None:
        self.dropped[kind] += n
        if run_id is not None:
            self._report_due.add(run_id)

    def _write(self, run_id: str | None, kind: str, n: int, what: str, fn: Callable[[], Any]) -> bool:
        if self._may_try() and self._flush() and self._attempt(what, fn):
            return True
        self._lose(run_id, kind, n)
        return False

    def log_artifact(self, run_id: str, local_path: str, artifact_path: str | None = None) -> None:
        self._write(run_id, "artifacts", 1, "log_artifact",
                    lambda: self._client.log_artifact(run_id, local_path, artifact_path))

    def log_artifacts(self, run_id: str, local_dir: str, artifact_path: str | None = None) -> None:
        self._write(run_id, "artifacts", _count_files(local_dir), "log_artifacts",
                    lambda: self._client.log_artifacts(run_id, local_dir, artifact_path))

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self._write(run_id, "artifacts", 1, "log_text", lambda: self._client.log_text(run_id, text, artifact_file))

    def log_dict(self, run_id: str, dictionary: dict[str, Any], artifact_file: str) -> None:
        self._write(run_id, "artifacts", 1, "log_dict",
                    lambda: self._client.log_dict(run_id, dictionary, artifact_file))

    def set_tag(self, run_id: str, key: str, value: Any, **kwargs: Any) -> None:
        self._write(run_id, "tags", 1, "set_tag", lambda: self._client.set_tag(run_id, key, value, **kwargs))

    def set_experiment_tag(self, experiment_id: str, key: str, value: Any) -> None:
        self._write(None, "tags", 1, "set_experiment_tag",
                    lambda: self._client.set_experiment_tag(experiment_id, key, value))

    def set_terminated(self, run_id: str, status: str | None = None, end_time: int | None = None) -> None:
        if not self._write(run_id, "status", 1, "set_terminated",
                           lambda: self._client.set_terminated(run_id, status, end_time)):
            log.warning("MLflow run %s could not be marked %s (store %s unreachable); it will show as RUNNING",
                        run_id, status or "FINISHED", self.tracking_uri)

    def close_run(self, run_id: str) -> None:
        """At the run's end: one last try to send what was kept, log the counts, and say what was lost."""
        self.try_now()
        if self.outages:
            self._report_due.add(run_id)
        if not self._flush():  # still down: what is kept now is lost with the process
            for kind, kept in (("metrics", self._metrics), ("params", self._params)):
                n = sum(len(v) for v in kept.values())
                if n:
                    self.dropped[kind] += n
                kept.clear()
        if self.outages:
            log.warning("MLflow run %s: %d store outage(s); %d metric values sent late; lost: %s", run_id,
                        self.outages, self.sent_late, dict(self.dropped) or "nothing")


class ResilientMLFlowLogger(MLFlowLogger):
    """Lightning's ``MLFlowLogger`` whose writes survive a tracking-store outage (see module doc), and
    which marks its experiment as model training (``mlflow.experimentKind``) so ``mlflow ui`` opens on
    the runs rather than on MLflow's GenAI pages."""

    def __init__(self, *args: Any, request_timeout_s: int = 5, request_max_retries: int = 1,
                 retry_interval_s: float = 60.0, max_buffered_metrics: int = 50_000,
                 experiment_kind: str | None = MODEL_TRAINING_KIND, **kwargs: Any) -> None:
        set_http_defaults(request_timeout_s, request_max_retries)
        super().__init__(*args, **kwargs)
        self._mlflow_client = ResilientClient(self._mlflow_client, str(self._tracking_uri),
                                              retry_interval_s=retry_interval_s,
                                              max_buffered_metrics=max_buffered_metrics)
        self._experiment_kind = experiment_kind

    @property
    def client(self) -> ResilientClient:
        return self._mlflow_client

    @property
    def experiment(self) -> Any:
        fresh = not self._initialized
        experiment = super().experiment
        if fresh and self._initialized and self._experiment_kind:
            self._tag_experiment_kind()
        return experiment

    @property
    def tracking_uri(self) -> str:
        return str(self._tracking_uri)

    @property
    def experiment_name(self) -> str:
        return str(self._experiment_name)

    @property
    def run_name(self) -> str | None:
        return self._run_name

    def _tag_experiment_kind(self) -> None:
        try:
            found = self._mlflow_client.get_experiment(self._experiment_id)
            if EXPERIMENT_KIND_TAG not in found.tags:  # a kind the user picked in the UI stays
                self._mlflow_client.set_experiment_tag(self._experiment_id, EXPERIMENT_KIND_TAG, self._experiment_kind)
        except Exception as exc:  # cosmetic: the UI only opens on another page
            log.warning("Could not tag MLflow experiment %s as %s: %s", self._experiment_id, self._experiment_kind,
                        _short(exc))

    def finalize(self, status: str = "success") -> None:
        """Flush what an outage kept, log the loss counts, then set the run's status — never raising."""
        if not self._initialized:
            return
        self._mlflow_client.close_run(str(self._run_id))
        if self._mlflow_client.down:
            self._mlflow_client.dropped["status"] += 1
            log.warning("MLflow run %s could not be marked %s (store %s unreachable); it will show as RUNNING",
                        self._run_id, "FINISHED" if status in ("success", "finished") else status.upper(),
                        self._tracking_uri)
            return
        try:
            super().finalize(status)
        except Exception as exc:
            log.warning("Could not finalize MLflow run %s: %s", self._run_id, _short(exc))
