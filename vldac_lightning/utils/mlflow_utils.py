"""MLflow at the edges of a run: check the store before anything heavy starts, name the run, and
say at the end where its checkpoint and its MLflow record are. See docs/troubleshooting.md ("MLflow")."""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from vldac_lightning.utils.config import ConfigError

log = logging.getLogger(__name__)

# Overrides that say where a run writes or how it is launched, not what it trains: left out of run names.
# The env and seed are named anyway.
_NAME_NOISE_KEYS = frozenset({"ckpt_path", "run_name", "logger", "torch_threads", "task_name", "seed", "env",
                              "resume_strict", "trainer.enable_progress_bar", "hparams_search"})
_NAME_NOISE_PREFIXES = ("paths.", "hydra.", "hydra/", "logger.")
_MAX_NAME_LEN = 120
_MAX_FLOAT_CHARS = 8  # a longer float value in a run name is rounded
_TASK_PREFIX = {"evaluate": "eval"}  # run names of other tasks than training start with this
UI_COMMAND = ("MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false {mlflow} ui --backend-store-uri {uri} "
              "--host 127.0.0.1 --port 5000")
UI_LOCAL_URL = "http://127.0.0.1:5000"


def mlflow_logger_cfg(cfg: DictConfig) -> DictConfig | None:
    """The ``logger.mlflow`` node, or None when tracking is off (``logger=none``)."""
    node = (cfg.get("logger") or {}).get("mlflow")
    return node if node is not None and "_target_" in node else None


def artifact_location(node: DictConfig) -> str | None:
    """Where a new experiment's artifacts go: ``logger.mlflow.artifact_location`` when set; else beside a
    sqlite store (``<db folder>/artifacts``), or the server's own root for an http(s) store (None).

    Never under one run's ``paths.log_dir``: every later run in a shared store inherits the experiment's
    location, so deleting that run's folder would delete other runs' artifacts."""
    configured = node.get("artifact_location")
    if configured:
        return str(configured)
    uri = str(node.tracking_uri)
    if uri.startswith("sqlite:///"):
        return str(Path(uri.removeprefix("sqlite:///")).expanduser().absolute().parent / "artifacts")
    return None


@contextmanager
def _environ(**values: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def check_tracking_store(cfg: DictConfig) -> None:
    """Fail within seconds, naming the store and the fix, when the MLflow store cannot be used.

    An http(s) store gets one request with a short timeout and no retries (MLflow's defaults retry a
    dead server for ≈ 255 s); a SQLite store's directory must be creatable and writable. Other
    stores are not probed.
    """
    node = mlflow_logger_cfg(cfg)
    if node is None:
        return
    uri = str(node.tracking_uri)
    fix = ("Start the server, set MLFLOW_TRACKING_URI to a store that works (unset, it defaults to "
           "sqlite:///<paths.log_dir>/mlflow/mlflow.db), or train without tracking: logger=none")
    if uri.startswith(("http://", "https://")):
        from mlflow import MlflowClient

        timeout = int(node.get("request_timeout_s", 5) or 5)
        started = time.monotonic()
        try:
            with _environ(MLFLOW_HTTP_REQUEST_TIMEOUT=str(timeout), MLFLOW_HTTP_REQUEST_MAX_RETRIES="0"):
                MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise ConfigError(f"MLflow tracking store {uri} (MLFLOW_TRACKING_URI / logger.mlflow.tracking_uri) is not "
                              f"usable (one try, {timeout} s timeout): {first}\n{fix}") from None
        log.info("MLflow tracking store %s answered in %.1f s", uri, time.monotonic() - started)
    elif uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        folder = db.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"MLflow store {uri}: cannot create its folder {folder} ({exc}).\n{fix}") from None
        if not os.access(folder, os.W_OK) or (db.exists() and not os.access(db, os.W_OK)):
            raise ConfigError(f"MLflow store {uri}: {db if db.exists() else folder} is not writable.\n{fix}")


def _hydra_job() -> Any | None:
    from hydra.core.hydra_config import HydraConfig

    try:
        return HydraConfig.get()
    except ValueError:  # not set when train(cfg) is called directly
        return None


def _short_value(value: str) -> str:
    """``gym_cards/numberline`` -> ``numberline``; a path-like value keeps only its last part; a long
    float (an Optuna trial's ``0.0002288113668475521``) keeps 4 significant digits (``0.0002288``)."""
    if len(value) > _MAX_FLOAT_CHARS and any(c in value for c in ".eE"):
        try:
            return f"{float(value):.4g}"
        except ValueError:
            pass
    return value.rstrip("/").rsplit("/", 1)[-1]


def env_label(cfg: DictConfig, hydra_cfg: Any | None = None) -> str:
    """A short env name: the ``env`` group choice (``numberline``) or else the env id without version."""
    choice = None
    if hydra_cfg is not None:
        choice = hydra_cfg.runtime.choices.get("env")
    if choice:
        return _short_value(str(choice))
    env_id = str(cfg.env.get("id", "env"))
    return re.sub(r"-v\d+$", "", _short_value(env_id))


def default_run_name(cfg: DictConfig) -> str:
    """A readable, per-job MLflow run name built from what the job changed: ``numberline-kl_beta=0.15-seed0``
    (``eval-`` first for evaluations, ``-job3`` last for the fourth job of a sweep).

    Without Hydra (``train(cfg)`` called directly) it is env, seed and a timestamp. Left to itself,
    MLflow picks a random name — the same one for every job, because the seed is set first.
    """
    from hydra.types import RunMode

    hydra_cfg = _hydra_job()
    task = str(cfg.get("task_name", "train"))
    parts = [] if task == "train" else [_TASK_PREFIX.get(task, task)]
    parts.append(env_label(cfg, hydra_cfg))
    if hydra_cfg is not None:
        for override in hydra_cfg.overrides.task:
            key, _, value = str(override).lstrip("+~").partition("=")
            if key not in _NAME_NOISE_KEYS and not key.startswith(_NAME_NOISE_PREFIXES):
                parts.append(f"{key.rsplit('.', 1)[-1]}={_short_value(value)}")
    parts.append(f"seed{cfg.get('seed', 0)}")
    if hydra_cfg is None:
        parts.append(time.strftime("%m%d-%H%M%S"))
    elif hydra_cfg.mode == RunMode.MULTIRUN:
        parts.append(f"job{hydra_cfg.job.num}")
    name = "-".join(p for p in parts if p)
    return name if len(name) <= _MAX_NAME_LEN else name[: _MAX_NAME_LEN - 3] + "..."


def mlflow_ui_link(tracking_uri: str, experiment_id: str, run_id: str | None = None) -> tuple[str, str | None]:
    """(URL, command to run first or None): the run's page, or the experiment's chart view."""
    page = f"#/experiments/{experiment_id}/runs/{run_id}" if run_id else \
        f"#/experiments/{experiment_id}/runs?compareRunsMode=CHART"
    if tracking_uri.startswith(("http://", "https://")):
        return f"{tracking_uri.rstrip('/')}/{page}", None
    mlflow_bin = "mlflow" if shutil.which("mlflow") else "python -m mlflow"
    return f"{UI_LOCAL_URL}/{page}", UI_COMMAND.format(mlflow=mlflow_bin, uri=tracking_uri)


def run_locations(loggers: list[Any], checkpoint_dir: str | None = None, results_file: str | None = None,
                  last_checkpoint: str | None = None) -> str:
    """Where a finished run's outputs are: checkpoints (``last_checkpoint``: the file this run wrote last),
    a results file, and each MLflow run with a UI link."""
    lines = []
    if checkpoint_dir:
        last = Path(last_checkpoint) if last_checkpoint else None
        lines.append(f"Checkpoints: {checkpoint_dir}" + (f" (last: {last})" if last and last.exists() else ""))
    if results_file:
        lines.append(f"Results: {results_file}")
    for logger in loggers:
        if not hasattr(logger, "tracking_uri") or not getattr(logger, "_initialized", False):
            continue
        uri, run_id, exp_id = str(logger.tracking_uri), logger.run_id, logger.experiment_id
        lines.append(f"MLflow: run {getattr(logger, 'run_name', None) or ''} ({run_id}), experiment "
                     f"{logger.experiment_name} ({exp_id}), tracking URI {uri}")
        run_url, command = mlflow_ui_link(uri, exp_id, run_id)
        chart_url, _ = mlflow_ui_link(uri, exp_id)
        if command:
            lines.append(f"  View: {command}")
            lines.append(f"  then open {run_url} (all runs' curves: {chart_url})")
        else:
            lines.append(f"  View: {run_url} (all runs' curves: {chart_url})")
        client = getattr(logger, "client", None)
        if client is not None and (client.outages or client.dropped):
            lost = {k: v for k, v in client.dropped.items() if v}
            lines.append(f"  The store was unreachable {client.outages} time(s) during the run; lost: {lost or 'nothing'}"
                         + (" (the store is still down: the run's status was not updated)" if client.down else ""))
    return "\n".join(lines)


def print_run_locations(loggers: list[Any], checkpoint_dir: str | None = None, results_file: str | None = None,
                        last_checkpoint: str | None = None) -> None:
    """Print :func:`run_locations` to stdout (the last thing a run says)."""
    text = run_locations(loggers, checkpoint_dir, results_file, last_checkpoint)
    if text:
        print(text, flush=True)
