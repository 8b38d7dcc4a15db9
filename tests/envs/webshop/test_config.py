"""``env=webshop`` composes with every model and the evaluate config, and keeps the paper's values."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

from vldac_lightning.envs.factory import LanguageEnvThunk
from vldac_lightning.utils.config import validate_config

CONF = Path(__file__).resolve().parents[3] / "conf"
MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))


@pytest.mark.parametrize("model", MODELS)
def test_webshop_composes_with_every_model(compose_train_cfg: Callable[..., DictConfig], model: str) -> None:
    cfg = compose_train_cfg(["env=webshop", f"model={model}"])
    validate_config(cfg)
    OmegaConf.to_container(cfg, resolve=True)
    assert cfg.env.id == "webshop/WebShop-v0"
    # Reference code: rollout 128; horizon 50, image history 2 (the paper's WebShop setting).
    assert (cfg.algo.gamma, cfg.algo.gae_lambda, cfg.algo.rollout_steps) == (0.99, 0.95, 128)
    assert (cfg.env.max_episode_steps, cfg.env.image_history, cfg.env.parse_failure) == (50, 2, "penalty")


def test_the_config_builds_the_env_it_describes(compose_train_cfg: Callable[..., DictConfig], chromium: str) -> None:
    cfg = compose_train_cfg(["env=webshop", "model=tiny", "env.env_kwargs.num_products=100",
                             "env.env_kwargs.num_eval_goals=10", "env.env_kwargs.image_size=[96,72]"])
    env = LanguageEnvThunk(OmegaConf.to_container(cfg.env, resolve=True), cfg.model.response_mode)()
    try:
        obs, _ = env.reset(seed=0)
        assert obs["images"].shape == (2, 72, 96, 3) and "Answer with only the number" in obs["text"]
        assert env.max_episode_steps == 50 and env.max_choices == 30
    finally:
        env.close()


def test_webshop_evaluate_config(compose_train_cfg: Callable[..., DictConfig]) -> None:
    cfg = compose_train_cfg(["env=webshop", "ckpt_path=/some/last.ckpt"], config_name="evaluate.yaml")
    validate_config(cfg)
    assert cfg.env.env_kwargs.num_eval_goals == 500
