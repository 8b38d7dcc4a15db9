"""The files a multirun's jobs and its MLflow parent run share, and the job table built from them.

Jobs may run in other processes (joblib) or on other machines (SLURM), so everything passes through
the sweep directory (``hydra.sweep.dir``), which every launcher gives its jobs:

- ``<sweep dir>/mlflow_sweep/parent.json``: the parent run, written once before any job starts; each
  job's MLflow run reads it and becomes the parent's child (:func:`sweep_tags`).
- ``<sweep dir>/mlflow_sweep/plan.json``: the jobs the sweep will run (the basic sweeper's grid),
  so a job that never ran is listed as NOT_RUN.
- ``<sweep dir>/mlflow_sweep/job<N>.json``: what job N returned (or its error), written when the job ends.
- ``<sweep dir>/mlflow_sweep/jobs.csv``: the job table, written when the sweep ends.

Pure file and table logic; the MLflow side is :mod:`vldac_lightning.utils.mlflow_sweep`. See
docs/config.md#mlflow-parent-runs.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

RECORDS_DIR = "mlflow_sweep"
PARENT_FILE = "parent.json"
PLAN_FILE = "plan.json"
TABLE_FILE = "jobs.csv"
# Tags on every child run. MLflow's UI nests a run under the run its mlflow.parentRunId names.
PARENT_TAG = "mlflow.parentRunId"
SWEEP_ID_TAG = "sweep.id"
JOB_TAG = "sweep.job"
DIRECTIONS = ("maximize", "minimize")
TABLE_COLUMNS = ("job", "status", "overrides", "value", "run_id", "run_name", "error")
NOT_RUN = "NOT_RUN"  # planned, but the sweep ended (a failure in an earlier batch, a stop signal) first
STOPPED = "STOPPED"  # stopped by SIGTERM/SIGINT with its checkpoint saved: resumable


@dataclass(frozen=True)
class ParentRun:
    """What a job needs to attach its MLflow run to the sweep's parent run."""

    run_id: str
    sweep_id: str
    tracking_uri: str
    experiment_id: str


@dataclass(frozen=True)
class JobRecord:
    """One finished job: its number, overrides, status (Hydra's COMPLETED/FAILED, or STOPPED), returned
    metric, and for a failed or stopped job the first line of its error."""

    job: int
    overrides: list[str]
    status: str
    value: float | None
    error: str | None = None


def records_dir(sweep_dir: str | Path) -> Path:
    return Path(sweep_dir) / RECORDS_DIR


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write atomically: a job reading the file never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, allow_nan=False))
    os.replace(tmp, path)


def write_parent(sweep_dir: str | Path, parent: ParentRun) -> Path:
    """Record a new sweep's parent run; records of an earlier sweep into the same dir are removed."""
    for stale in [*records_dir(sweep_dir).glob("job*.json"), records_dir(sweep_dir) / PLAN_FILE]:
        stale.unlink(missing_ok=True)
    path = records_dir(sweep_dir) / PARENT_FILE
    _write_json(path, asdict(parent))
    return path


def read_parent(sweep_dir: str | Path) -> ParentRun | None:
    """The sweep's parent run, or None when the sweep has none (no MLflow logger, or a plain run)."""
    path = records_dir(sweep_dir) / PARENT_FILE
    if not path.is_file():
        return None
    try:
        return ParentRun(**json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:  # a damaged file must not stop the job: its run is just not nested
        log.warning("Ignoring unreadable sweep parent-run file %s: %s", path, exc)
        return None


def write_plan(sweep_dir: str | Path, plan: list[list[str]]) -> Path:
    """Record the overrides of every job the sweep will launch, in job order."""
    path = records_dir(sweep_dir) / PLAN_FILE
    _write_json(path, {"jobs": plan})
    return path


def read_plan(sweep_dir: str | Path) -> list[list[str]]:
    """The planned jobs' overrides ([] when unknown: an Optuna search decides as it goes)."""
    path = records_dir(sweep_dir) / PLAN_FILE
    try:
        return [list(map(str, job)) for job in json.loads(path.read_text())["jobs"]] if path.is_file() else []
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("Ignoring unreadable sweep plan %s: %s", path, exc)
        return []


def first_line(error: BaseException) -> str:
    """``Type: first line of the message`` (at most 300 characters) for a job table."""
    text = (str(error).strip().splitlines() or [""])[0][:300]
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def finite(value: Any) -> float | None:
    """``value`` as a float, or None when it is missing, not a number, NaN or infinite."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def write_job_record(sweep_dir: str | Path, record: JobRecord) -> Path:
    path = records_dir(sweep_dir) / f"job{record.job}.json"
    _write_json(path, {**asdict(record), "value": finite(record.value)})
    return path


def read_job_records(sweep_dir: str | Path) -> list[JobRecord]:
    """Every job record of the sweep, by job number."""
    out = []
    for path in records_dir(sweep_dir).glob("job*.json"):
        try:
            out.append(JobRecord(**json.loads(path.read_text())))
        except (ValueError, TypeError) as exc:  # a foreign or damaged file: the table lacks that job
            log.warning("Skipping unreadable sweep job record %s: %s", path, exc)
    return sorted(out, key=lambda r: r.job)


def job_rank_is_zero() -> bool:
    """False in the non-zero ranks of a multi-process job (SLURM tasks, torchrun): one record per job."""
    for var in ("RANK", "SLURM_PROCID"):
        if os.environ.get(var, "0") not in ("", "0"):
            return False
    return True


def sweep_tags(job_num: int, sweep_dir: str | Path, tracking_uri: str) -> dict[str, str]:
    """Tags that make a job's MLflow run a child of the sweep's parent run; empty when the sweep has
    no parent run, or when the job logs to another tracking store than the parent (a per-job
    ``logger.mlflow.tracking_uri`` override), where the parent id would point nowhere."""
    parent = read_parent(sweep_dir)
    if parent is None:
        return {}
    if parent.tracking_uri != tracking_uri:
        log.warning("This job logs to %s, the sweep's parent run is in %s: the job's run is not nested under it",
                    tracking_uri, parent.tracking_uri)
        return {}
    return {PARENT_TAG: parent.run_id, SWEEP_ID_TAG: parent.sweep_id, JOB_TAG: str(job_num)}


def job_table(records: list[JobRecord], children: dict[int, tuple[str, str]],
              plan: list[list[str]] | None = None) -> list[dict[str, Any]]:
    """One row per job (``TABLE_COLUMNS``): job number, status, overrides, returned value, the child
    run's id and name (``children``: job number -> (run id, run name)) and the error of a failed job.
    A child run without a record (its job died before it could write one) has status UNKNOWN; a
    planned job with neither has status NOT_RUN."""
    rows = []
    by_job = {r.job: r for r in records}
    planned = dict(enumerate(plan or []))
    for job in sorted(set(by_job) | set(children) | set(planned)):
        record = by_job.get(job)
        run_id, run_name = children.get(job, ("", ""))
        status = record.status if record else ("UNKNOWN" if run_id else NOT_RUN)
        rows.append({
            "job": job,
            "status": status,
            "overrides": " ".join(record.overrides if record else planned.get(job, [])),
            "value": finite(record.value) if record else None,
            "run_id": run_id,
            "run_name": run_name,
            "error": (record.error or "") if record else "",
        })
    return rows


def summary(rows: list[dict[str, Any]], plan: list[list[str]] | None = None,
            command: str = "python -m vldac_lightning.train") -> str:
    """What a sweep's end prints: each job's outcome, and the commands (from ``plan``) that run what is left."""
    import shlex

    counts = {s: sum(r["status"] == s for r in rows) for s in ("COMPLETED", "FAILED", STOPPED, NOT_RUN, "UNKNOWN")}
    lines = [f"Sweep: {len(rows)} job(s): " + ", ".join(f"{n} {s.lower().replace('_', ' ')}"
                                                       for s, n in counts.items() if n)]
    for r in rows:
        detail = {"COMPLETED": f"value={r['value']}", "FAILED": r["error"], STOPPED: r["error"],
                  NOT_RUN: "never started", "UNKNOWN": "ended without a record"}.get(r["status"], "")
        point = " ".join(f"{k}={v}" for k, v in swept_params(rows, r).items()) or r["overrides"]
        lines.append(f"  job {r['job']} {r['status']}: {point}" + (f" -> {detail}" if detail else ""))
    left = [r for r in rows if r["status"] == NOT_RUN]
    if any(r["status"] == STOPPED for r in rows):
        lines.append("Continue a stopped job with its 'Resume with:' command printed above.")
    planned = dict(enumerate(plan or []))
    for r in left:
        argv = planned.get(r["job"], r["overrides"].split())
        lines.append(f"Run job {r['job']}: {command} {' '.join(shlex.quote(o) for o in argv)}")
    return "\n".join(lines)


def best_row(rows: list[dict[str, Any]], direction: str) -> dict[str, Any] | None:
    """The row with the best finite value (the first one on ties), or None when no job returned one."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction={direction!r} is not one of {list(DIRECTIONS)}")
    scored = [r for r in rows if finite(r["value"]) is not None]
    if not scored:
        return None
    pick = max if direction == "maximize" else min
    return pick(scored, key=lambda r: r["value"])  # max/min keep the first of equal values


def table_csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(TABLE_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "value": "" if row["value"] is None else repr(row["value"])})
    return out.getvalue()


def override_params(overrides: str) -> dict[str, str]:
    """``"optimizer.lr=0.001 seed=1"`` -> ``{"optimizer.lr": "0.001", "seed": "1"}`` (``+``/``~`` dropped)."""
    out = {}
    for override in overrides.split():
        key, sep, value = override.lstrip("+~").partition("=")
        if sep:
            out[key] = value
    return out


def swept_params(rows: list[dict[str, Any]], row: dict[str, Any]) -> dict[str, str]:
    """``row``'s values of the keys the sweep varied (their values differ between jobs, or some job
    lacks them): the point that job tried, without the overrides every job shared."""
    per_job = [override_params(r["overrides"]) for r in rows if r["overrides"]]
    mine = override_params(row["overrides"])
    return {k: v for k, v in mine.items() if any(job.get(k) != v for job in per_job)}


def objective(metrics: dict[str, float], name: str) -> float | None:
    """The value a sweeper optimises: ``metrics[name]`` as a finite float. None, with an error that
    names the cause, when the run's final metrics lack it or it is NaN/infinite; Optuna then marks
    the trial failed instead of ranking a non-number."""
    if name not in metrics:
        log.error("optimized_metric=%s is not among this run's final metrics (%s): the sweeper gets no value. "
                  "Set optimized_metric to one of them.", name, ", ".join(sorted(metrics)) or "none")
        return None
    value = finite(metrics[name])
    if value is None:
        log.error("optimized_metric=%s is %r, not a finite number: the sweeper gets no value", name, metrics[name])
    return value
