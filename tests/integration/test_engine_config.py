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
    from vldac_lightning.utils.choices import group_choices

    for model in group_choices("model"):  # every model config, real checkpoints' too (not loaded here)
        assert compose_train_cfg([f"model={model}"]).model.engine._target_.endswith("StaticEngine"), model


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


def test_engine_choices_on_the_command_line() -> None:
    """``model/engine=hf`` stays a nested-group choice (not rewritten to ``model=engine/hf`` like
    ``env/gym_cards=...``), ``model.engine=hf`` is read as it, and engines are no ``model=`` choices."""
    from vldac_lightning.utils.choices import check_group_overrides, group_choices, normalize_group_overrides

    argv, notes = normalize_group_overrides(["model/engine=hf", "model.engine=static", "model.engine.check_every=2"])
    assert argv == ["model/engine=hf", "model/engine=static", "model.engine.check_every=2"]
    assert len(notes) == 1 and "model/engine=static" in notes[0]
    assert normalize_group_overrides(["model.engine=nonesuch"])[0] == ["model.engine=nonesuch"]  # Hydra's error
    assert "tiny" in group_choices("model") and not any(c.startswith("engine") for c in group_choices("model"))
    assert "Valid choices for 'model'" in (check_group_overrides(["model=engine/hf"]) or "")
