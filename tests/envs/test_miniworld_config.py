"""The MiniWorld configs compose with every model, validate, keep Table 6, and the GPU recipe composes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

from vldac_lightning.envs.registry import ENV_IDS
from vldac_lightning.utils.config import validate_config

CONF = Path(__file__).resolve().parents[2] / "conf"
ENVS = sorted(f"miniworld/{p.stem}" for p in (CONF / "env" / "miniworld").glob("*.yaml"))
MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))

Compose = Callable[..., DictConfig]


def test_the_four_paper_tasks_have_configs() -> None:
    assert ENVS == ["miniworld/fourrooms", "miniworld/hallway", "miniworld/oneroom", "miniworld/wallgap"]


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("env", ENVS)
def test_miniworld_env_model_combinations_compose_and_validate(compose_train_cfg: Compose, env: str,
                                                               model: str) -> None:
    cfg = compose_train_cfg([f"env={env}", f"model={model}"])
    validate_config(cfg)
    OmegaConf.to_container(cfg, resolve=True)
    assert cfg.env.id in ENV_IDS and cfg.env.id.lower() == f"{env}-v0"
    # Table 6 (MiniWorld) and the episode rules (docs/environments.md#miniworld)
    assert (cfg.algo.gamma, cfg.algo.gae_lambda, cfg.env.image_history) == (0.99, 0.95, 4)
    assert cfg.env.max_episode_steps == 128 and cfg.env.end_penalty == -1.0 and cfg.env.parse_failure == "random"
    assert (cfg.env.env_kwargs.obs_width, cfg.env.env_kwargs.obs_height) == (80, 60)


def test_debug_smoke_on_oneroom_validates(compose_train_cfg: Compose) -> None:
    cfg = compose_train_cfg(["env=miniworld/oneroom", "debug=smoke"])
    validate_config(cfg)
    assert cfg.env.pool_mode == "sync" and cfg.algo.rollout_steps == 8


def test_gpu_recipe_keeps_table_6(compose_train_cfg: Compose) -> None:
    cfg = compose_train_cfg(["experiment=paper_oneroom_qwen2vl_7b"])
    validate_config(cfg)
    OmegaConf.to_container(cfg, resolve=True)
    assert cfg.env.id == "miniworld/OneRoom-v0" and cfg.env.pool_mode == "async"
    assert cfg.model.name_or_path == "Qwen/Qwen2-VL-7B-Instruct" and cfg.model.dtype == "bfloat16"
    assert cfg.model.response_mode == "json" and (cfg.model.lora.r, cfg.model.lora.alpha) == (16, 32)
    assert (cfg.algo.gamma, cfg.algo.gae_lambda, cfg.algo.kl_beta, cfg.algo.value_coef) == (0.99, 0.95, 0.05, 0.15)
    assert (cfg.algo.total_env_steps, cfg.algo.grad_accum_steps, cfg.algo.minibatch_size) == (51200, 128, 1)
    assert (cfg.algo.ppo_epochs, cfg.algo.warmup_updates, cfg.algo.rollout_steps) == (2, 2, 256)
    assert (cfg.optimizer.lr, cfg.optimizer.min_lr) == (5e-05, 1e-07)
    assert cfg.callbacks.evaluation.num_episodes == 50 and cfg.run_name == "paper_oneroom_qwen2vl_7b"


def test_other_tasks_compose_with_the_gpu_recipe(compose_train_cfg: Compose) -> None:
    cfg = compose_train_cfg(["experiment=paper_oneroom_qwen2vl_7b", "env=miniworld/wallgap"])
    validate_config(cfg)
    assert cfg.env.id == "miniworld/WallGap-v0" and cfg.model.dtype == "bfloat16"


def test_evaluate_composes_on_miniworld(compose_train_cfg: Compose) -> None:
    cfg = compose_train_cfg(["env=miniworld/hallway", "ckpt_path=/some/last.ckpt"], config_name="evaluate.yaml")
    validate_config(cfg)
    assert cfg.env.id == "miniworld/Hallway-v0" and cfg.num_episodes == 50


@pytest.mark.parametrize("value, want", [(-2.0, -2.0), (None, None)])
def test_the_env_thunk_passes_end_penalty_from_the_config(value: float | None, want: float | None) -> None:
    from vldac_lightning.envs.factory import LanguageEnvThunk

    spec = {"id": "gym_cards/NumberLine-v0", "image_history": 1, "max_episode_steps": 5, "parse_failure": "random",
            "parse_failure_penalty": -1.0, "end_penalty": value}
    env = LanguageEnvThunk(spec, "action_only")()
    try:
        assert env.end_penalty == want
    finally:
        env.close()
    del spec["end_penalty"]  # absent: the family default (gym-cards: none)
    env = LanguageEnvThunk(spec, "action_only")()
    try:
        assert env.end_penalty is None
    finally:
        env.close()
