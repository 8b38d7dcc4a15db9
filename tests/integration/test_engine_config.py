"""Engines are chosen by config: the default is the static engine, ``model/engine=hf`` the reference,
and a class from outside the package plugs in by ``_target_`` with no code change."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

pytestmark = pytest.mark.slow


def test_default_engine_is_static_and_hf_is_one_override(compose_train_cfg: Callable[..., Any]) -> None:
    from vldac_lightning.models.engines import build_engine

    assert build_engine(compose_train_cfg([]).model.engine).name == "static"
    assert build_engine(compose_train_cfg(["model/engine=hf"]).model.engine).name == "hf"
    for model in ("qwen2_vl_2b", "qwen2_5_vl_7b"):  # real checkpoints' configs use it too (not loaded here)
        assert compose_train_cfg([f"model={model}"]).model.engine._target_.endswith("StaticEngine")


def test_an_external_engine_plugs_in_through_config_alone(compose_train_cfg: Callable[..., Any]) -> None:
    from tests.models.fake_engine import CountingEngine
    from vldac_lightning.train import train

    CountingEngine.calls = 0
    cfg = compose_train_cfg(["debug=smoke", "logger=none", "model/engine=hf",
                             "model.engine._target_=tests.models.fake_engine.CountingEngine"])
    metrics, objects = train(cfg)
    assert CountingEngine.calls > 0  # every rollout and evaluation step generated through it
    assert type(objects["module"].policy.engine) is CountingEngine
    assert "eval/success_rate" in metrics
