"""``env=alfworld`` composes with every model and the evaluate config, and keeps the paper's values."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

from vldac_lightning.utils.config import validate_config

CONF = Path(__file__).resolve().parents[3] / "conf"
MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))


@pytest.mark.parametrize("model", MODELS)
def test_alfworld_composes_with_every_model(compose_train_cfg: Callable[..., DictConfig], model: str) -> None:
    cfg = compose_train_cfg(["env=alfworld", f"model={model}"])
    validate_config(cfg)
    OmegaConf.to_container(cfg, resolve=True)
    assert cfg.env.id == "alfworld/AlfWorld-v0"
    # Table 6 / reference code: γ 0.99, λ 0.95, rollout 128, horizon 50, image history 4.
    assert (cfg.algo.gamma, cfg.algo.gae_lambda, cfg.algo.rollout_steps) == (0.99, 0.95, 128)
    assert (cfg.env.max_episode_steps, cfg.env.image_history, cfg.env.parse_failure) == (50, 4, "penalty")
    assert cfg.env.env_kwargs.reward_won == 50.0 and cfg.env.env_kwargs.cache_dir.endswith(".cache/alfworld/generated")


def test_alfworld_evaluate_config(compose_train_cfg: Callable[..., DictConfig]) -> None:
    cfg = compose_train_cfg(["env=alfworld", "ckpt_path=/some/last.ckpt"], config_name="evaluate.yaml")
    validate_config(cfg)
    assert cfg.env.env_kwargs.eval_split == "valid_unseen"
