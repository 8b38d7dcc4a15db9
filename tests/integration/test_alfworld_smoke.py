"""``env=alfworld debug=smoke`` trains end to end on generated ALFWorld games, offline, with the tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import compose_config, reset_hydra

pytest.importorskip("textworld", reason="needs the alfworld extra (scripts/setup.sh installs it)")
pytestmark = pytest.mark.slow


def test_alfworld_smoke_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vldac_lightning.envs.alfworld.generator import TASK_TYPES
    from vldac_lightning.train import train

    monkeypatch.setenv("ALFWORLD_DATA", str(tmp_path / "alfworld_data"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    # A 4-step horizon keeps the smoke's three evaluations short (the tiny policy never wins).
    overrides = ["env=alfworld", "debug=smoke", "logger=none", "env.max_episode_steps=4",
                 f"env.env_kwargs.cache_dir={tmp_path / 'games'}"]
    cfg = compose_config(overrides, log_dir=tmp_path / "logs", output_dir=tmp_path / "out")
    try:
        assert cfg.env.id == "alfworld/AlfWorld-v0" and cfg.model.response_mode == "action_only"
        assert (cfg.algo.gamma, cfg.algo.gae_lambda) == (0.99, 0.95)
        metrics, objects = train(cfg)
    finally:
        reset_hydra()
    assert objects["trainer"].global_step == 4
    assert 0.0 <= metrics["eval/success_rate"] <= 1.0 and metrics["eval/episodes"] == 4
    per_type = {k for k in metrics if k.startswith("eval/success_rate/")}
    assert per_type and per_type <= {f"eval/success_rate/{t}" for t in TASK_TYPES}
    assert (tmp_path / "out" / "checkpoints" / "last.ckpt").is_file()
    games = list((tmp_path / "games" / "json_2.1.1").glob("*/*/*/game.tw-pddl"))
    assert games and {p.parts[-4] for p in games} == {"train", "valid_unseen"}
