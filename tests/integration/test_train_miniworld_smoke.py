"""``debug=smoke`` training on ``env=miniworld/oneroom``: the tiny model on the real simulator, headless."""

from __future__ import annotations

import pytest

from tests.conftest import compose_config, reset_hydra
from tests.envs.miniworld_support import require_miniworld

pytestmark = pytest.mark.slow


def test_smoke_train_on_oneroom_completes(tmp_path: pytest.TempPathFactory) -> None:
    require_miniworld()
    from vldac_lightning.train import train

    # A 3-step limit ends episodes inside each 4-step-per-env rollout and keeps evaluation short.
    overrides = ["env=miniworld/oneroom", "debug=smoke", "env.max_episode_steps=3", "logger=none"]
    cfg = compose_config(overrides, log_dir=tmp_path / "logs", output_dir=tmp_path / "out")
    try:
        metrics, objects = train(cfg)
    finally:
        reset_hydra()
    assert objects["trainer"].global_step == 4  # 2 iterations × 2 optimizer steps (see test_train_smoke)
    assert 0.0 <= metrics["eval/success_rate"] <= 1.0
    # Episodes end at the 3-step limit with −1 (no reward), or earlier at the box with its reward.
    episodes = objects["datamodule"].last_rollout_stats.episodes
    assert episodes and all(e.length <= 3 for e in episodes)
    assert all(e.episode_return == -1.0 or (e.success and e.episode_return > 0) for e in episodes)
    assert -1.0 <= metrics["eval/episode_return"] <= 1.0
    dm = objects["datamodule"]
    assert dm.train_pool is None and dm.eval_pool is None  # pools closed at teardown
