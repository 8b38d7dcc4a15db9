"""One MLflow parent run per multirun, with every job's run nested under it.

:class:`SweepParentRun` is a Hydra callback (conf/hydra/default.yaml). Before the first job it checks
the tracking store (an unusable one is a ``Config error``, exit 2), creates the parent run with the
sweep's settings, and leaves its id in the sweep directory, where every job finds it, whichever
process or machine runs the job (:mod:`vldac_lightning.utils.sweep_records`). Each job records what
it returned; when the sweep ends the parent gets the job table (job -> overrides -> value -> child
run) and the best value. Without an MLflow logger (``logger=csv`` / ``none``) it does nothing and
never imports MLflow. See docs/config.md#mlflow-parent-runs.
"""

from __future__ import annotations

import atexit
import logging
import time
import uuid
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from vldac_lightning.utils import sweep_records as records

log = logging.getLogger(__name__)

_SWEEP_ARTIFACT_DIR = "sweep"
_MAX_PARAM_LEN = 6000  # MLflow's limit on a param value


def _sweep_dir(config: DictConfig) -> Path:
    return Path(str(config.hydra.sweep.dir)).absolute()


def _choice(config: DictConfig, group: str) -> str:
    return str(OmegaConf.select(config, f"hydra.runtime.choices.{group}", default=None) or "")


def parent_run_name(config: DictConfig, sweep_dir: Path) -> str:
    """``sweep-numberline-optuna-2026-11-27_20-30-00``: env, the hparams_search file (if any), the sweep dir's name."""
    from vldac_lightning.utils.mlflow_utils import env_label

    search = _choice(config, "hparams_search")
    parts = ["sweep", env_label(config, config.hydra), "" if search in ("", "null") else search.rsplit("/", 1)[-1], sweep_dir.name]
    return "-".join(p for p in parts if p)


def sweep_settings(config: DictConfig) -> dict[str, str]:
    """The sweep's definition as MLflow params: its command-line overrides, the sweeper's search
    space and settings, the launcher, and the optimized metric with its direction."""
    hydra_cfg = config.hydra
    sweeper = OmegaConf.to_container(hydra_cfg.sweeper, resolve=True)
    assert isinstance(sweeper, dict)
    params: dict[str, Any] = {
        "sweep.overrides": " ".join(str(o) for o in hydra_cfg.overrides.task),
        "sweep.sweeper": str(sweeper.get("_target_", "")).rsplit(".", 1)[-1],
        "sweep.launcher": str(OmegaConf.select(hydra_cfg, "launcher._target_", default="")).rsplit(".", 1)[-1],
        "sweep.optimized_metric": str(config.get("optimized_metric")),
        "sweep.direction": str(config.get("optimized_metric_direction")),
    }
    for key, value in (sweeper.get("params") or {}).items():
        params[f"sweep.params.{key}"] = value
    for key in ("n_trials", "n_jobs", "max_failure_rate", "max_batch_size"):
        if sweeper.get(key) is not None:
            params[f"sweep.{key}"] = sweeper[key]
    sampler = sweeper.get("sampler")
    if isinstance(sampler, dict):
        params["sweep.sampler"] = str(sampler.get("_target_", "")).rsplit(".", 1)[-1]
        params["sweep.sampler_seed"] = sampler.get("seed")
    return {k: str(v)[:_MAX_PARAM_LEN] for k, v in params.items()}


class SweepParentRun(Callback):
    """Hydra callback: the multirun's MLflow parent run (a no-op for single runs and non-MLflow sweeps)."""

    def __init__(self) -> None:
        # Plain values only: launchers pickle the callbacks to send them to each job's process.
        self._parent: records.ParentRun | None = None
        self._sweep_dir: Path | None = None
        self._metric = self._direction = ""
        self._finished = True

    # ---------------------------------------------------------------- in the process that runs `-m`
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from vldac_lightning.utils.config import exit_on_config_error
        from vldac_lightning.utils.mlflow_utils import mlflow_logger_cfg

        node = mlflow_logger_cfg(config)
        if node is None:
            return
        with exit_on_config_error():
            self._start(config, node)

    def _start(self, config: DictConfig, node: DictConfig) -> None:
        from mlflow import MlflowClient

        from vldac_lightning.utils.config import ConfigError
        from vldac_lightning.utils.mlflow_utils import artifact_location, check_tracking_store
        from vldac_lightning.utils.resilient_mlflow import (
            EXPERIMENT_KIND_TAG,
            MODEL_TRAINING_KIND,
            set_http_defaults,
        )

        check_tracking_store(config)  # an unusable store stops the sweep before any job starts
        set_http_defaults(int(node.get("request_timeout_s", 5) or 5), int(node.get("request_max_retries", 1) or 1))
        uri = str(node.tracking_uri)
        sweep_dir = _sweep_dir(config)
        client = MlflowClient(tracking_uri=uri)
        try:
            experiment = client.get_experiment_by_name(str(node.experiment_name))
            if experiment is None:
                experiment_id = client.create_experiment(str(node.experiment_name),
                                                         artifact_location=artifact_location(node))
                kind = node.get("experiment_kind", MODEL_TRAINING_KIND)
                if kind:
                    client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, str(kind))
            else:
                experiment_id = experiment.experiment_id
            sweep_id = f"{sweep_dir.name}-{uuid.uuid4().hex[:8]}"
            run = client.create_run(experiment_id, run_name=parent_run_name(config, sweep_dir), tags={
                records.SWEEP_ID_TAG: sweep_id, "sweep.dir": str(sweep_dir),
                "mlflow.note.content": "Hydra multirun; its jobs are the nested runs. Job table: artifact "
                                       f"{_SWEEP_ARTIFACT_DIR}/jobs.json. Overrides: "
                                       + " ".join(str(o) for o in config.hydra.overrides.task)})
            run_id = run.info.run_id
            settings = sweep_settings(config)
            from mlflow.entities import Param

            client.log_batch(run_id, params=[Param(k, v) for k, v in settings.items()])
            sweep_def = {"overrides": list(config.hydra.overrides.task),
                         "sweeper": OmegaConf.to_container(config.hydra.sweeper, resolve=True),
                         "launcher": OmegaConf.to_container(config.hydra.launcher, resolve=True)}
            client.log_text(run_id, OmegaConf.to_yaml(OmegaConf.create(sweep_def)), f"{_SWEEP_ARTIFACT_DIR}/sweep.yaml")
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise ConfigError(f"MLflow tracking store {uri}: could not create the sweep's parent run ({first}). "
                              "Fix the store, or sweep without tracking: logger=none") from None
        self._parent = records.ParentRun(run_id=run_id, sweep_id=sweep_id, tracking_uri=uri,
                                         experiment_id=str(experiment_id))
        records.write_parent(sweep_dir, self._parent)
        plan = planned_jobs(config)
        if plan:
            records.write_plan(sweep_dir, plan)
        self._sweep_dir, self._finished = sweep_dir, False
        _OPEN.append(self)
        self._metric = str(config.get("optimized_metric") or "")  # evaluate.py's sweeps optimise nothing
        self._direction = str(config.get("optimized_metric_direction", "maximize"))
        # A failed job makes Hydra's sweepers raise before on_multirun_end: still close the parent then.
        atexit.register(self._finish, ended=False)
        log.info("MLflow parent run %s for this sweep (sweep id %s)", run_id, sweep_id)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._finish(ended=True)

    def _finish(self, ended: bool, stopped_by: str | None = None) -> None:
        """Log the job table and the best value to the parent and close it: FINISHED when the sweep
        ended and every job completed, KILLED when a signal stopped it, else FAILED; print every job's
        outcome and what is left to run. An MLflow failure here is warned about, never raised: the
        jobs are done, and the table is also in the sweep directory."""
        if self._finished or self._parent is None or self._sweep_dir is None:
            return
        from mlflow import MlflowClient

        self._finished = True
        parent, sweep_dir = self._parent, self._sweep_dir
        table_path = records.records_dir(sweep_dir) / records.TABLE_FILE
        plan = records.read_plan(sweep_dir)
        rows = records.job_table(records.read_job_records(sweep_dir), {}, plan)
        try:
            client = MlflowClient(tracking_uri=parent.tracking_uri)
            rows = records.job_table(records.read_job_records(sweep_dir), self._children(client), plan)
            table_path.write_text(records.table_csv(rows))
            self._log_results(client, rows, sweep_dir)
            complete = ended and bool(rows) and all(r["status"] == "COMPLETED" for r in rows)
            status = "FINISHED" if complete else "KILLED" if stopped_by else "FAILED"
            client.set_terminated(parent.run_id, status)
            log.info("MLflow parent run %s: %d jobs, table %s", parent.run_id, len(rows), table_path)
        except Exception as exc:
            log.warning("Could not finish the sweep's MLflow parent run %s (%s); the job records are in %s",
                        parent.run_id, exc, records.records_dir(sweep_dir))
        print(records.summary(rows, plan) + f"\nJob table: {table_path} (MLflow parent run {parent.run_id})"
              + (f"\nThe sweep was stopped by {stopped_by}." if stopped_by else ""), flush=True)

    def _children(self, client: Any) -> dict[int, tuple[str, str]]:
        """Job number -> (run id, run name) of the parent's child runs."""
        assert self._parent is not None
        children: dict[int, tuple[str, str]] = {}
        query = f"tags.`{records.PARENT_TAG}` = '{self._parent.run_id}'"
        for run in client.search_runs([self._parent.experiment_id], filter_string=query, max_results=10_000):
            job = run.data.tags.get(records.JOB_TAG)
            if job is not None and job.isdigit():
                children[int(job)] = (run.info.run_id, run.info.run_name or "")
        return children

    def _log_results(self, client: Any, rows: list[dict[str, Any]], sweep_dir: Path) -> None:
        from mlflow.entities import Metric, Param

        assert self._parent is not None
        run_id = self._parent.run_id
        columns = {c: [r[c] for r in rows] for c in records.TABLE_COLUMNS}
        client.log_table(run_id, data=columns, artifact_file=f"{_SWEEP_ARTIFACT_DIR}/jobs.json")
        client.log_text(run_id, records.table_csv(rows), f"{_SWEEP_ARTIFACT_DIR}/jobs.csv")
        optuna_results = sweep_dir / "optimization_results.yaml"  # the Optuna sweeper's own summary
        if optuna_results.is_file():
            client.log_artifact(run_id, str(optuna_results), _SWEEP_ARTIFACT_DIR)
        now = int(time.time() * 1000)
        done = sum(r["status"] == "COMPLETED" for r in rows)
        metrics = [Metric("sweep/jobs_completed", done, now, 0), Metric("sweep/jobs_failed", len(rows) - done, now, 0)]
        best = records.best_row(rows, self._direction)
        params, tags = [], {}
        if best is not None and self._metric:
            metrics.append(Metric(f"best/{self._metric}", float(best["value"]), now, 0))
            params = [Param(f"best.{k}", v[:_MAX_PARAM_LEN]) for k, v in records.swept_params(rows, best).items()]
            tags = {"best.job": str(best["job"]), "best.run_id": best["run_id"]}
        client.log_batch(run_id, metrics=metrics, params=params)
        for key, value in tags.items():
            client.set_tag(run_id, key, value)

    # ---------------------------------------------------------------- in each job's process
    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        """Record what this job returned (or its error), next to the parent run's file."""
        status = getattr(job_return.status, "name", str(job_return.status))
        value = job_return._return_value  # a failed job holds its exception
        failed = isinstance(value, BaseException)
        record_job(status, None if failed else value, records.first_line(value) if failed else None,
                   overrides=[str(o) for o in job_return.overrides or []])


_OPEN: list[SweepParentRun] = []  # this process's sweeps whose parent run is still open


def record_job(status: str, value: Any = None, error: str | None = None, overrides: list[str] | None = None) -> None:
    """Write this multirun job's record (only in a sweep that has a parent run, on rank 0)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        hydra_cfg = HydraConfig.get()
    except ValueError:
        return
    if hydra_cfg.mode != RunMode.MULTIRUN or not records.job_rank_is_zero():
        return
    sweep_dir = Path(str(hydra_cfg.sweep.dir)).absolute()
    if records.read_parent(sweep_dir) is None:
        return
    job_overrides = overrides if overrides is not None else [str(o) for o in hydra_cfg.overrides.task]
    records.write_job_record(sweep_dir, records.JobRecord(job=int(hydra_cfg.job.num), overrides=job_overrides,
                                                          status=status, value=records.finite(value), error=error))


def finish_stopped_sweeps(exit_code: int) -> None:
    """After a stop signal ended this process's sweep mid-job (the command-line entry points call this
    before their fast exit, which skips ``atexit``): close the parent run KILLED with every job's
    outcome and print what is left to run."""
    name = _signal_name(exit_code)
    for sweep in list(_OPEN):
        sweep._finish(ended=False, stopped_by=name)
    _OPEN.clear()


def record_stopped_job(exit_code: int) -> None:
    """In a multirun job stopped by a signal (its checkpoint saved): the job's record says STOPPED."""
    record_job(records.STOPPED, error=f"stopped by {_signal_name(exit_code)}; its checkpoint is saved")


def _signal_name(exit_code: int) -> str:
    """``143`` -> ``SIGTERM`` (the shell's 128 + signal convention)."""
    import signal

    try:
        return signal.Signals(exit_code - 128).name
    except ValueError:
        return f"exit code {exit_code}"


def planned_jobs(config: DictConfig) -> list[list[str]]:
    """The overrides of each job Hydra's basic sweeper will launch, in job order ([] for other sweepers,
    e.g. Optuna, which choose as they go)."""
    if not str(OmegaConf.select(config, "hydra.sweeper._target_", default="")).endswith("BasicSweeper"):
        return []
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = OmegaConf.select(config, "hydra.sweeper.params", default=None) or {}
    arguments = [f"{k}={v}" for k, v in params.items()] + [str(o) for o in config.hydra.overrides.task]
    try:
        parsed = OverridesParser.create().parse_overrides(arguments)
        return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
    except Exception as exc:  # noqa: BLE001 - without a plan the table just lacks NOT_RUN rows
        log.warning("Could not list the sweep's jobs in advance (%s)", exc)
        return []


def job_logger_tags(cfg: DictConfig) -> dict[str, str]:
    """For a multirun job's MLflow logger: the tags that nest its run under the sweep's parent run
    (empty outside a multirun, without a parent run, or when not under Hydra)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from vldac_lightning.utils.mlflow_utils import mlflow_logger_cfg

    node = mlflow_logger_cfg(cfg)
    try:
        hydra_cfg = HydraConfig.get()
    except ValueError:
        return {}
    if node is None or hydra_cfg.mode != RunMode.MULTIRUN:
        return {}
    return records.sweep_tags(int(hydra_cfg.job.num), Path(str(hydra_cfg.sweep.dir)).absolute(), str(node.tracking_uri))
