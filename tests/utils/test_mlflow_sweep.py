"""Sweep plumbing without training: the MLflow parent-run callback driven by hand (jobs' runs come from
train.build_loggers, as in a real job), the sweep configs (Optuna, SLURM), and the missing-plugin error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from tests.conftest import CONF_DIR, ROOT, reset_hydra
from vldac_lightning.utils import choices
from vldac_lightning.utils import sweep_records as records
from vldac_lightning.utils.mlflow_sweep import SweepParentRun, job_logger_tags


@pytest.fixture(autouse=True)
def clean_hydra() -> Iterator[None]:
    yield
    reset_hydra()


def compose_with_hydra(overrides: list[str], tmp_path: Path, *, job_num: int | None = None) -> DictConfig:
    """The real train config with its ``hydra`` node, as a multirun's master (``job_num`` None) or job."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train.yaml", overrides=[f"paths.log_dir={tmp_path / 'logs'}", *overrides],
                      return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.mode = RunMode.MULTIRUN
        cfg.hydra.job.num = job_num or 0
        cfg.hydra.runtime.output_dir = str(tmp_path / "out" / str(job_num or 0))
    HydraConfig.instance().set_config(cfg)
    return cfg


# ------------------------------------------------------------------------------- the parent-run callback
@pytest.mark.slow  # an MLflow SQLite store: seconds per run on a busy machine
def test_jobs_runs_nest_under_one_parent_that_gets_the_table_and_the_best(tmp_path: Path, mlflow_uri: str) -> None:
    from hydra.core.utils import JobReturn, JobStatus
    from mlflow import MlflowClient

    from vldac_lightning.train import build_loggers

    sweep_dir = tmp_path / "sweep"
    sweep_overrides = [f"hydra.sweep.dir={sweep_dir}"]
    records.write_job_record(sweep_dir, records.JobRecord(7, ["seed=7"], "COMPLETED", 1.0))  # an earlier sweep's
    callback = SweepParentRun()
    master = compose_with_hydra(sweep_overrides, tmp_path)
    with read_write(master.hydra.overrides):  # what `-m algo.kl_beta=0.05,0.15` leaves in the master config
        master.hydra.overrides.task.append("algo.kl_beta=0.05,0.15")
    callback.on_multirun_start(master)
    parent = records.read_parent(sweep_dir)
    assert parent is not None and parent.tracking_uri == mlflow_uri

    for job, (beta, value) in enumerate([("0.05", 0.25), ("0.15", 0.75)]):
        job_overrides = [f"algo.kl_beta={beta}"]
        cfg = compose_with_hydra([*sweep_overrides, *job_overrides], tmp_path, job_num=job)
        task_cfg = cfg.copy()
        with open_dict(task_cfg):
            del task_cfg["hydra"]
        assert job_logger_tags(task_cfg)["sweep.job"] == str(job)
        (logger,) = build_loggers(task_cfg)
        logger.log_metrics({"eval/success_rate": value}, step=16)
        logger.finalize("success")
        callback.on_job_end(cfg, JobReturn(overrides=job_overrides, status=JobStatus.COMPLETED, _return_value=value))
    callback.on_multirun_end(compose_with_hydra(sweep_overrides, tmp_path))

    client = MlflowClient(mlflow_uri)
    runs = client.search_runs([parent.experiment_id])
    (parent_run,) = [r for r in runs if r.info.run_id == parent.run_id]
    children = sorted((r for r in runs if r.info.run_id != parent.run_id), key=lambda r: r.data.tags["sweep.job"])
    assert [r.data.tags[records.PARENT_TAG] for r in children] == [parent.run_id] * 2
    assert {r.data.tags[records.SWEEP_ID_TAG] for r in children} == {parent.sweep_id}
    assert parent_run.info.status == "FINISHED"
    assert parent_run.data.params["sweep.overrides"].endswith("algo.kl_beta=0.05,0.15")
    assert parent_run.data.params["sweep.direction"] == "maximize"
    assert parent_run.data.metrics["best/eval/success_rate"] == 0.75
    assert parent_run.data.params["best.algo.kl_beta"] == "0.15"
    assert parent_run.data.tags["best.run_id"] == children[1].info.run_id
    table = json.loads(Path(client.download_artifacts(parent.run_id, "sweep/jobs.json", str(tmp_path))).read_text())
    rows = [dict(zip(table["columns"], row)) for row in table["data"]]
    assert [(r["job"], r["overrides"], r["value"], r["run_id"]) for r in rows] == [
        (0, "algo.kl_beta=0.05", 0.25, children[0].info.run_id), (1, "algo.kl_beta=0.15", 0.75, children[1].info.run_id)]
    assert (sweep_dir / records.RECORDS_DIR / records.TABLE_FILE).read_text() == records.table_csv(rows)


@pytest.mark.slow
def test_a_sweep_that_never_ends_leaves_its_parent_failed(tmp_path: Path, mlflow_uri: str) -> None:
    from mlflow import MlflowClient

    callback = SweepParentRun()
    callback.on_multirun_start(compose_with_hydra([f"hydra.sweep.dir={tmp_path / 'sweep'}"], tmp_path))
    callback._finish(ended=False)  # what the exit hook does when a failed job made Hydra raise
    parent = records.read_parent(tmp_path / "sweep")
    assert parent is not None
    assert MlflowClient(mlflow_uri).get_run(parent.run_id).info.status == "FAILED"


def test_without_mlflow_the_callback_does_nothing(tmp_path: Path, mlflow_uri: str) -> None:
    sweep_dir = tmp_path / "sweep"
    SweepParentRun().on_multirun_start(compose_with_hydra([f"hydra.sweep.dir={sweep_dir}", "logger=csv"], tmp_path))
    assert not sweep_dir.exists() and not Path(mlflow_uri.removeprefix("sqlite:///")).exists()


def test_an_unreachable_store_stops_the_sweep_with_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # port 9: refused at once
    with pytest.raises(SystemExit) as stop:
        SweepParentRun().on_multirun_start(compose_with_hydra([f"hydra.sweep.dir={tmp_path / 's'}"], tmp_path))
    assert stop.value.code == 2
    assert capsys.readouterr().err.startswith("Config error: MLflow tracking store http://127.0.0.1:9")
    assert records.read_parent(tmp_path / "s") is None


# ------------------------------------------------------------------------------- the sweep configs
def test_optuna_search_space_names_real_keys_and_follows_the_metric_direction(tmp_path: Path) -> None:
    from vldac_lightning.utils.config import check_known_keys

    cfg = compose_with_hydra(["hparams_search=optuna", "seed=7"], tmp_path)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "maximize"
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler" and sweeper.sampler.seed == 7
    assert set(sweeper.params) == {"optimizer.lr", "algo.kl_beta", "algo.value_coef"}
    for key in sweeper.params:  # a renamed key would make every trial train the same config
        assert isinstance(OmegaConf.select(cfg, key), float), key
    with open_dict(cfg):
        del cfg["hydra"]
    check_known_keys(cfg)
    minimize = compose_with_hydra(["hparams_search=optuna", "optimized_metric_direction=minimize"], tmp_path)
    assert minimize.hydra.sweeper.direction == "minimize"


def test_a_wrong_direction_is_a_config_error(compose_train_cfg) -> None:  # type: ignore[no-untyped-def]
    from vldac_lightning.utils.config import ConfigError, validate_config

    with pytest.raises(ConfigError, match=r"optimized_metric_direction='up' is not one of \['maximize', 'minimize'\]"):
        validate_config(compose_train_cfg(["optimized_metric_direction=up"]))


def test_slurm_launcher_takes_nodes_and_tasks_from_the_trainer(tmp_path: Path) -> None:
    cfg = compose_with_hydra(["hydra/launcher=slurm", "trainer=gpu", "trainer.devices=8", "++trainer.num_nodes=2",
                              "hydra.launcher.partition=big"], tmp_path)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert (launcher["nodes"], launcher["tasks_per_node"], launcher["gpus_per_node"], launcher["partition"]) == \
        (2, 8, 8, "big")
    single = OmegaConf.to_container(compose_with_hydra(["hydra/launcher=slurm"], tmp_path).hydra.launcher, resolve=True)
    assert (single["nodes"], single["tasks_per_node"]) == (1, 1)


# ------------------------------------------------------------------------------- a missing plugin
@pytest.mark.parametrize(("override", "package", "via"), [
    ("hydra/launcher=joblib", "hydra-joblib-launcher", ""),
    ("hydra/launcher=submitit_slurm", "hydra-submitit-launcher", ""),
    ("hydra/launcher=slurm", "hydra-submitit-launcher", " (for hydra/launcher/submitit_slurm)"),
    ("hparams_search=optuna", "hydra-optuna-sweeper", " (for hydra/sweeper/optuna)"),
])
def test_a_missing_plugin_names_its_extra(override: str, package: str, via: str) -> None:
    message = choices.check_plugin_overrides(["-m", override, "seed=0,1"], installed=lambda module: False)
    assert message == (f"{override} needs the Hydra plugin {package}{via}, which is not installed: "
                       "pip install 'vldac_lightning[sweep]' (docs/config.md#sweeps)")
    assert choices.check_plugin_overrides([override], installed=lambda module: True) is None


def test_overrides_without_plugins_pass(tmp_path: Path) -> None:
    none_installed = ["hparams_search=kl_beta", "env=gym_cards/ezpoints", "experiment=paper_ezpoints_qwen2vl_7b",
                      "algo.kl_beta=0.1,0.2", "hydra.launcher.n_jobs=2"]
    assert choices.check_plugin_overrides(none_installed, installed=lambda module: False) is None
    # The sweep extra is installed in this environment: the real check finds the plugins.
    assert choices.check_plugin_overrides(["hydra/launcher=joblib", "hparams_search=optuna"]) is None
    # A value far longer than a file name (it used to be stat-ed as conf/run_name/<value>.yaml: ENAMETOOLONG)
    # reaches validate_config, which names the key.
    assert choices.check_plugin_overrides(["run_name=" + "x" * 4097, "task_name=" + "y" * 300]) is None


def test_hydra_groups_are_not_rewritten_as_nested_choices() -> None:
    argv, notes = choices.normalize_group_overrides(["hydra/launcher=joblib", "hydra/sweeper=optuna"])
    assert argv == ["hydra/launcher=joblib", "hydra/sweeper=optuna"] and notes == []


def test_the_cli_stops_before_hydra_when_a_plugin_is_missing() -> None:
    hide = "import sys; sys.modules['hydra_plugins.hydra_joblib_launcher'] = None"  # find_spec -> None
    run = "sys.argv[1:] = ['-m', 'hydra/launcher=joblib', 'seed=0,1']; from vldac_lightning.train import cli; cli()"
    proc = subprocess.run([sys.executable, "-c", f"{hide}; {run}"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("Config error: hydra/launcher=joblib needs the Hydra plugin hydra-joblib-launcher, "
                                   "which is not installed: pip install 'vldac_lightning[sweep]' "
                                   "(docs/config.md#sweeps)")
