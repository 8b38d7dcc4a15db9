"""A run folder holds one run: another run's checkpoints, a concurrent run, or a second resume of the
same checkpoint are refused within seconds, before any model loads (docs/troubleshooting.md "Run folders")."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from vldac_lightning.utils.config import ConfigError
from vldac_lightning.utils.run_folder import RUN_LOCK, claim_run_folder


def test_a_folder_with_another_runs_checkpoints_is_refused(tmp_path: Path) -> None:
    ckpts = tmp_path / "run" / "checkpoints"
    ckpts.mkdir(parents=True)
    (ckpts / "last.ckpt").write_bytes(b"x")
    (ckpts / "step8.ckpt").write_bytes(b"x")
    with pytest.raises(ConfigError, match=r"already holds another run's checkpoints .*last\.ckpt.*hydra\.run\.dir"
                                          r".*ckpt_path=.*last\.ckpt"):
        with claim_run_folder(tmp_path / "run", ckpts, None):
            pass
    with claim_run_folder(tmp_path / "run", ckpts, str(ckpts / "step8.ckpt")):  # continuing it there is fine
        pass
    with claim_run_folder(tmp_path / "new", tmp_path / "new" / "checkpoints", None):  # a fresh folder is fine
        pass


def test_a_second_run_in_the_same_folder_is_refused_while_the_first_runs(tmp_path: Path) -> None:
    with claim_run_folder(tmp_path / "run", tmp_path / "run" / "checkpoints", None):
        with pytest.raises(ConfigError, match=r"another run is writing into .*run now"):
            with claim_run_folder(tmp_path / "run", tmp_path / "run" / "checkpoints", None):
                pass
    with claim_run_folder(tmp_path / "run", tmp_path / "run" / "checkpoints", None):  # released at the end
        pass


def test_two_resumes_of_one_checkpoint_are_refused(tmp_path: Path) -> None:
    old = tmp_path / "old" / "checkpoints"
    old.mkdir(parents=True)
    (old / "last.ckpt").write_bytes(b"x")
    with claim_run_folder(tmp_path / "a", tmp_path / "a" / "checkpoints", str(old / "last.ckpt")):
        with pytest.raises(ConfigError, match=r"another run is writing or continuing the checkpoints in .*old"):
            with claim_run_folder(tmp_path / "b", tmp_path / "b" / "checkpoints", str(old / "last.ckpt")):
                pass


def test_the_lock_dies_with_its_process(tmp_path: Path) -> None:
    """A SIGKILLed run leaves no stale lock: flock is released by the kernel."""
    script = (f"import fcntl, os, time; fd = os.open({str(tmp_path / RUN_LOCK)!r}, os.O_RDWR | os.O_CREAT); "
              "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, str(os.getpid()).encode()); print('held', flush=True); "
              "time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match=rf"process {child.pid}"):
            with claim_run_folder(tmp_path, None, None):
                pass
    finally:
        child.kill()
        child.wait()
    with claim_run_folder(tmp_path, None, None):
        pass


def test_train_refuses_a_folder_with_checkpoints_before_the_model_loads(
        compose_train_cfg: Callable[..., DictConfig], monkeypatch: pytest.MonkeyPatch) -> None:
    from vldac_lightning.models import module as module_mod
    from vldac_lightning.train import train

    cfg = compose_train_cfg(["debug=smoke"])
    ckpts = Path(cfg.callbacks.model_checkpoint.dirpath)
    ckpts.mkdir(parents=True)
    (ckpts / "last.ckpt").write_bytes(b"an earlier run's checkpoint")
    monkeypatch.setattr(module_mod, "load_backbone", lambda cfg: pytest.fail("the model was loaded"))
    started = time.monotonic()
    with pytest.raises(ConfigError, match="already holds another run's checkpoints"):
        train(cfg)
    assert time.monotonic() - started < 30
    assert (ckpts / "last.ckpt").read_bytes() == b"an earlier run's checkpoint"
    assert sorted(p.name for p in ckpts.glob("*.ckpt")) == ["last.ckpt"]


def test_an_unwritable_log_dir_is_one_config_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Hydra's own mkdir failure is ~33 lines of chained tracebacks; the callback answers first."""
    from omegaconf import OmegaConf

    from vldac_lightning.utils.run_folder import RunFolderCheck

    (tmp_path / "a_file").write_text("")
    config = OmegaConf.create({"paths": {"log_dir": str(tmp_path / "a_file" / "logs")},
                               "hydra": {"run": {"dir": "${paths.log_dir}/train/runs/2026"},
                                         "sweep": {"dir": "${paths.log_dir}/train/multiruns/2026"}}})
    for start in (RunFolderCheck().on_run_start, RunFolderCheck().on_multirun_start):
        with pytest.raises(SystemExit) as exited:
            start(config)
        assert exited.value.code == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("Config error: runs are written under ")
        assert "a part of the path is a file" in err and "paths.log_dir=/a/writable/folder" in err
    RunFolderCheck().on_run_start(OmegaConf.create({"hydra": {"run": {"dir": str(tmp_path / "ok" / "run")}}}))
    assert (tmp_path / "ok").is_dir() and not (tmp_path / "ok" / "run").exists()


@pytest.mark.parametrize(("var", "value", "first"), [("LOCAL_RANK", "1", False), ("NODE_RANK", "2", False),
                                                     ("SLURM_PROCID", "3", False), ("LOCAL_RANK", "0", True)])
def test_only_the_first_process_claims_the_folder(monkeypatch: pytest.MonkeyPatch, var: str, value: str,
                                                  first: bool) -> None:
    """DDP's launcher re-runs the command for ranks > 0 with the same folder: they must not be refused."""
    from vldac_lightning.utils.run_folder import first_process

    for name in ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(var, value)
    assert first_process() is first
