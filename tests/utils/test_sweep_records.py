"""The pure parts of sweep tracking: the parent-run handoff through the sweep directory, job records,
the job table and its best row, and the value a job returns to the sweeper."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest

from vldac_lightning.utils import sweep_records as records
from vldac_lightning.utils.sweep_records import JobRecord, ParentRun

PARENT = ParentRun(run_id="abc123", sweep_id="2026-01-01_00-00-00-deadbeef", tracking_uri="sqlite:////x/m.db",
                   experiment_id="1")


def test_the_parent_run_reaches_a_job_through_the_sweep_dir(tmp_path: Path) -> None:
    assert records.read_parent(tmp_path) is None  # a sweep without a parent run
    assert records.sweep_tags(3, tmp_path, PARENT.tracking_uri) == {}
    path = records.write_parent(tmp_path, PARENT)
    assert path.parent == tmp_path / records.RECORDS_DIR
    assert records.read_parent(tmp_path) == PARENT
    assert records.sweep_tags(3, tmp_path, PARENT.tracking_uri) == {
        "mlflow.parentRunId": "abc123", "sweep.id": PARENT.sweep_id, "sweep.job": "3"}
    assert not list(path.parent.glob(".*.tmp"))  # written atomically, no leftovers
    path.write_text('{"run_id": "abc"')  # damaged: the job runs, un-nested
    assert records.read_parent(tmp_path) is None


def test_a_job_logging_to_another_store_is_not_nested(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    records.write_parent(tmp_path, PARENT)
    with caplog.at_level(logging.WARNING):
        assert records.sweep_tags(0, tmp_path, "sqlite:////elsewhere/m.db") == {}
    assert "sqlite:////elsewhere/m.db" in caplog.text and PARENT.tracking_uri in caplog.text


def test_job_records_round_trip_and_non_finite_values_become_none(tmp_path: Path) -> None:
    records.write_job_record(tmp_path, JobRecord(job=1, overrides=["seed=1"], status="COMPLETED", value=float("nan")))
    records.write_job_record(tmp_path, JobRecord(job=0, overrides=["seed=0"], status="COMPLETED", value=0.5))
    (records.records_dir(tmp_path) / "job9.json").write_text("{not json")  # damaged: skipped, not fatal
    got = records.read_job_records(tmp_path)
    assert got == [JobRecord(0, ["seed=0"], "COMPLETED", 0.5), JobRecord(1, ["seed=1"], "COMPLETED", None)]


def test_job_table_joins_records_and_child_runs() -> None:
    recs = [JobRecord(0, ["lr=0.1", "seed=0"], "COMPLETED", 0.25), JobRecord(1, ["lr=0.2", "seed=0"], "FAILED", None)]
    children = {0: ("run0", "name0"), 2: ("run2", "name2")}  # job 1 never created a run; job 2 died before its record
    rows = records.job_table(recs, children)
    assert [r["job"] for r in rows] == [0, 1, 2]
    assert rows[0] == {"job": 0, "status": "COMPLETED", "overrides": "lr=0.1 seed=0", "value": 0.25,
                       "run_id": "run0", "run_name": "name0", "error": ""}
    assert rows[1]["run_id"] == "" and rows[1]["value"] is None
    assert rows[2]["status"] == "UNKNOWN" and rows[2]["run_id"] == "run2"
    csv_text = records.table_csv(rows)
    assert csv_text.splitlines()[0] == ",".join(records.TABLE_COLUMNS)
    assert csv_text.splitlines()[1] == "0,COMPLETED,lr=0.1 seed=0,0.25,run0,name0,"


def test_the_table_lists_failed_stopped_and_never_run_jobs_and_how_to_run_them() -> None:
    recs = [JobRecord(0, ["seed=0"], "COMPLETED", 0.5),
            JobRecord(1, ["seed=1"], "FAILED", None, "ConfigError: algo.minibatch_size=0 must be >= 1"),
            JobRecord(2, ["seed=2"], records.STOPPED, None, "stopped by SIGTERM; its checkpoint is saved")]
    plan = [["seed=0"], ["seed=1"], ["seed=2"], ["seed=3", "run_name=a b"]]
    rows = records.job_table(recs, {0: ("run0", "n0")}, plan)
    assert [(r["job"], r["status"]) for r in rows] == [(0, "COMPLETED"), (1, "FAILED"), (2, "STOPPED"), (3, "NOT_RUN")]
    assert rows[1]["error"] == "ConfigError: algo.minibatch_size=0 must be >= 1"
    assert rows[3]["overrides"] == "seed=3 run_name=a b"
    text = records.summary(rows, plan)
    assert text.splitlines()[0] == "Sweep: 4 job(s): 1 completed, 1 failed, 1 stopped, 1 not run"
    assert "  job 1 FAILED: seed=1 -> ConfigError: algo.minibatch_size=0 must be >= 1" in text
    assert "'Resume with:'" in text
    assert "Run job 3: python -m vldac_lightning.train seed=3 'run_name=a b'" in text


def _rows(values: list[float | None]) -> list[dict[str, object]]:
    return [{"job": i, "value": v, "overrides": f"lr={i} seed=0", "status": "COMPLETED", "run_id": f"r{i}"}
            for i, v in enumerate(values)]


def test_best_row_follows_the_direction_and_skips_non_numbers() -> None:
    rows = _rows([0.5, None, 0.9, 0.9, 0.1])
    assert records.best_row(rows, "maximize")["job"] == 2  # the first of the tied best
    assert records.best_row(rows, "minimize")["job"] == 4
    assert records.best_row(_rows([None, None]), "maximize") is None
    with pytest.raises(ValueError, match="direction='max'"):
        records.best_row(rows, "max")


def test_swept_params_are_the_keys_that_differ_between_jobs() -> None:
    rows = _rows([0.1, 0.2])
    assert records.swept_params(rows, rows[1]) == {"lr": "1"}  # seed=0 is shared: not a swept value
    assert records.swept_params(rows[:1], rows[0]) == {}


def test_objective_is_a_finite_float_or_none_with_the_reason(caplog: pytest.LogCaptureFixture) -> None:
    assert records.objective({"eval/success_rate": 0.75}, "eval/success_rate") == 0.75
    with caplog.at_level(logging.ERROR):
        assert records.objective({"eval/success_rate": 0.75}, "train/kl") is None
        assert records.objective({"eval/success_rate": math.nan}, "eval/success_rate") is None
    assert "optimized_metric=train/kl is not among this run's final metrics (eval/success_rate)" in caplog.text
    assert "optimized_metric=eval/success_rate is nan, not a finite number" in caplog.text


def test_only_rank_zero_of_a_multi_process_job_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("SLURM_PROCID", raising=False)
    assert records.job_rank_is_zero()
    monkeypatch.setenv("SLURM_PROCID", "3")
    assert not records.job_rank_is_zero()
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("RANK", "1")
    assert not records.job_rank_is_zero()
