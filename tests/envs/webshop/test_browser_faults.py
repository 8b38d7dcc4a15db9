"""A browser that is missing or not Chromium is named before the MLflow run exists, and a binary that
dies at launch is named instead of Playwright's bare ``TargetClosedError`` (docs/troubleshooting.md)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from vldac_lightning.envs.webshop.browser import Browser, chromium_problem
from vldac_lightning.utils.config import ConfigError


def test_a_binary_that_is_not_chromium_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "the browser /bin/false is not a working Chromium (/bin/false --version: exit status 1" in \
        str(chromium_problem("/bin/false"))
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("VLDAC_CHROMIUM", raising=False)
    assert "found none" in str(chromium_problem(None))


def test_train_refuses_a_broken_browser_before_the_mlflow_run_exists(
        compose_train_cfg: Callable[..., DictConfig], mlflow_uri: str, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from vldac_lightning.train import train

    cfg = compose_train_cfg(["env=webshop", "debug=smoke", "env.env_kwargs.browser_executable=/bin/false"])
    with pytest.raises(ConfigError, match=r"/bin/false is not a working Chromium.*browser_executable"):
        train(cfg)
    assert MlflowClient(mlflow_uri).search_experiments(filter_string="name = 'vldac_lightning'") == []


def test_a_browser_that_dies_at_launch_is_named(tmp_path: Path) -> None:
    pytest.importorskip("playwright")
    fake = tmp_path / "chromium"
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    with pytest.raises(RuntimeError, match=rf"WebShop's browser {fake} did not start as headless Chromium.*"
                                           r"browser_executable"):
        Browser(64, 64, executable=str(fake), timeout_s=20)
