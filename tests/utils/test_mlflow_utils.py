"""MLflow at a run's edges: the start-up store check, run names from overrides, the end-of-run report."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf, open_dict

from tests.conftest import CONF_DIR, reset_hydra
from vldac_lightning.utils.config import ConfigError
from vldac_lightning.utils.mlflow_utils import check_tracking_store, default_run_name, run_locations

# Port 9 (discard) has no listener on a test machine: connections are refused at once.
DEAD_URI = "http://127.0.0.1:9"


def compose(overrides: list[str], tmp_path: Path, *, job_num: int | None = None,
            config_name: str = "train.yaml") -> DictConfig:
    """The real config with HydraConfig set as a job of a run (or, with ``job_num``, of a sweep)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose(config_name, overrides=[f"paths.log_dir={tmp_path}", *overrides],
                            return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(tmp_path / "out")
        cfg.hydra.mode = RunMode.MULTIRUN if job_num is not None else RunMode.RUN
        cfg.hydra.job.num = job_num or 0
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


@pytest.fixture(autouse=True)
def clean_hydra() -> Iterator[None]:
    yield
    reset_hydra()


# ------------------------------------------------------------------------------------- run names
def test_run_names_come_from_the_overrides(tmp_path: Path) -> None:
    a = default_run_name(compose(["algo.kl_beta=0.15", "seed=3", "torch_threads=1"], tmp_path))
    b = default_run_name(compose(["algo.kl_beta=0.05", "seed=3", f"ckpt_path={tmp_path}/x.ckpt"], tmp_path))
    assert a == "numberline-kl_beta=0.15-seed3"
    assert b == "numberline-kl_beta=0.05-seed3"  # paths and launch knobs are left out
    ez = default_run_name(compose(["env=gym_cards/ezpoints", "debug=smoke", "env.max_episode_steps=3"], tmp_path))
    assert ez == "ezpoints-debug=smoke-max_episode_steps=3-seed0"


def test_sweep_jobs_get_their_job_number_and_evaluations_a_prefix(tmp_path: Path) -> None:
    names = {default_run_name(compose(["algo.kl_beta=0.05"], tmp_path, job_num=n)) for n in (0, 1)}
    assert names == {"numberline-kl_beta=0.05-seed0-job0", "numberline-kl_beta=0.05-seed0-job1"}
    assert default_run_name(compose([], tmp_path, config_name="evaluate.yaml")) == "eval-numberline-seed0"


def test_without_hydra_the_name_is_env_seed_and_time() -> None:
    reset_hydra()
    cfg = OmegaConf.create({"task_name": "train", "seed": 7, "env": {"id": "gym_cards/NumberLine-v0"}})
    name = default_run_name(cfg)
    assert name.startswith("NumberLine-seed7-") and name[len("NumberLine-seed7-"):][:4] == time.strftime("%m%d")


def test_train_passes_the_derived_name_to_the_mlflow_logger(tmp_path: Path) -> None:
    from vldac_lightning.train import build_loggers

    cfg = compose(["algo.kl_beta=0.15"], tmp_path)
    with open_dict(cfg):
        cfg.logger.mlflow.tracking_uri = f"sqlite:///{tmp_path / 'm.db'}"
    (logger,) = build_loggers(cfg)
    assert logger.run_name == "numberline-kl_beta=0.15-seed0"
    (named,) = build_loggers(OmegaConf.merge(cfg, {"logger": {"mlflow": {"run_name": "mine"}}}))
    assert named.run_name == "mine"


# ------------------------------------------------------------------------------------- start-up check
def test_an_unreachable_http_store_fails_fast_naming_uri_and_fix(tmp_path: Path) -> None:
    cfg = compose([], tmp_path)
    with open_dict(cfg):
        cfg.logger.mlflow.tracking_uri = DEAD_URI
    started = time.monotonic()
    with pytest.raises(ConfigError) as info:
        check_tracking_store(cfg)
    elapsed = time.monotonic() - started
    assert DEAD_URI in str(info.value) and "logger=none" in str(info.value) and "MLFLOW_TRACKING_URI" in str(info.value)
    assert elapsed < 30, f"{elapsed:.0f} s (MLflow's own retries take ≈ 255 s)"


def test_a_sqlite_store_whose_folder_cannot_exist_fails(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    cfg = compose([], tmp_path)
    with open_dict(cfg):
        cfg.logger.mlflow.tracking_uri = f"sqlite:///{blocker}/mlflow.db"
    with pytest.raises(ConfigError, match="cannot create its folder"):
        check_tracking_store(cfg)
    with open_dict(cfg):
        cfg.logger.mlflow.tracking_uri = f"sqlite:///{tmp_path}/new/mlflow.db"
    check_tracking_store(cfg)  # a new folder is created
    assert (tmp_path / "new").is_dir()


def test_no_tracking_needs_no_store(tmp_path: Path) -> None:
    check_tracking_store(compose(["logger=none"], tmp_path))


# ------------------------------------------------------------------------------------- end-of-run report
class _Logger:
    """What run_locations reads from our MLflow logger."""

    _initialized = True
    experiment_name = "vldac_lightning"
    experiment_id = "3"
    run_id = "abc123"
    run_name = "numberline-seed0"
    client = None

    def __init__(self, uri: str) -> None:
        self.tracking_uri = uri


def test_run_locations_name_checkpoint_run_and_ui_link(tmp_path: Path) -> None:
    (tmp_path / "last.ckpt").write_bytes(b"")  # another run's, beside this run's last-v1.ckpt
    (tmp_path / "last-v1.ckpt").write_bytes(b"")
    text = run_locations([_Logger("sqlite:///logs/mlflow/mlflow.db")], checkpoint_dir=str(tmp_path),
                         last_checkpoint=str(tmp_path / "last-v1.ckpt"))
    assert f"last: {tmp_path / 'last-v1.ckpt'}" in text and "abc123" in text and "numberline-seed0" in text
    assert "ui --backend-store-uri sqlite:///logs/mlflow/mlflow.db" in text
    assert "http://127.0.0.1:5000/#/experiments/3/runs/abc123" in text
    remote = run_locations([_Logger("http://mlflow.example:5000/")])
    assert "http://mlflow.example:5000/#/experiments/3/runs/abc123" in remote
    assert "http://mlflow.example:5000/#/experiments/3/runs?compareRunsMode=CHART" in remote
    assert "mlflow ui" not in remote
    assert run_locations([_Logger("sqlite:///x.db")], results_file="/r/eval_metrics.json").startswith(
        "Results: /r/eval_metrics.json")


def test_a_logger_that_never_reached_the_store_is_not_reported() -> None:
    logger = _Logger("http://127.0.0.1:9")
    logger._initialized = False
    assert run_locations([logger]) == ""


def test_artifacts_follow_a_shared_store_not_the_first_runs_log_dir(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """One MLFLOW_TRACKING_URI, two runs with their own paths.log_dir: the experiment (created by the first)
    must not keep every later run's artifacts under the first run's folder."""
    from mlflow import MlflowClient

    from tests.conftest import compose_config, reset_hydra
    from vldac_lightning.train import build_loggers

    store = tmp_path / "shared" / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    uris = []
    try:
        for name in ("a", "b"):
            cfg = compose_config([], log_dir=tmp_path / name / "logs", output_dir=tmp_path / name / "out")
            (logger,) = [lg for lg in build_loggers(cfg) if hasattr(lg, "tracking_uri")]
            uris.append(MlflowClient(str(logger.tracking_uri)).get_run(logger.run_id).info.artifact_uri)
    finally:
        reset_hydra()
    for uri in uris:
        assert uri.startswith(f"{tmp_path / 'shared' / 'artifacts'}") or \
            uri.startswith(f"file://{tmp_path / 'shared' / 'artifacts'}"), uri
        assert str(tmp_path / "a") not in uri
