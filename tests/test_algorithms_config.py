"""Every algorithm composes, validates its own keys (errors name the key), and is selected by its
config alone; the Fig. 4 ladder composes on algo=rl4vlm."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

from vldac_lightning.algo.base import Algorithm, algorithm_class, build_algorithm
from vldac_lightning.utils.config import ConfigError, validate_config

CONF = Path(__file__).resolve().parents[1] / "conf"
ALGOS = sorted(p.stem for p in (CONF / "algo").glob("*.yaml"))
GROUP_ALGOS = ("gigpo", "grpo", "loop")

Compose = Callable[..., DictConfig]


def test_the_five_algorithms_are_configs() -> None:
    assert ALGOS == ["gigpo", "grpo", "loop", "rl4vlm", "vldac"]


@pytest.mark.parametrize("debug", [[], ["debug=smoke"]], ids=["default", "smoke"])
@pytest.mark.parametrize("algo", ALGOS)
def test_every_algorithm_composes_and_validates(compose_train_cfg: Compose, algo: str, debug: list[str]) -> None:
    cfg = compose_train_cfg([f"algo={algo}", *debug])
    validate_config(cfg)
    OmegaConf.to_container(cfg, resolve=True)
    algorithm = build_algorithm(cfg.algo)
    assert isinstance(algorithm, Algorithm) and algorithm.name == algo == cfg.algo.name
    if algo in GROUP_ALGOS:
        assert algorithm.needs().whole_episodes and not algorithm.has_critic
        assert cfg.env.group_size == (2 if debug else 4) and cfg.env.num_envs % cfg.env.group_size == 0
        assert not algorithm.policy_frozen(0)  # no critic, no warm-up
    else:
        assert algorithm.has_critic and cfg.env.group_size == 1
        assert algorithm.policy_frozen(0)  # value warm-up


@pytest.mark.parametrize(
    "algo, override, key",
    [
        ("grpo", "env.group_size=1", "env.group_size"),
        ("loop", "env.group_size=3", "env.group_size"),  # 16 envs are not 3-copy groups
        ("gigpo", "algo.norm=median", "algo.norm"),
        ("gigpo", "algo.step_gamma=1.5", "algo.step_gamma"),
        ("rl4vlm", "algo.ratio_level=sequence", "algo.ratio_level"),
        ("rl4vlm", "algo.thought_lambda=2", "algo.thought_lambda"),
        ("rl4vlm", "algo.value_stop_grad=maybe", "algo.value_stop_grad"),
        ("vldac", "algo.value_coef=-1", "algo.value_coef"),
        ("grpo", "algo.adv_eps=0", "algo.adv_eps"),
        ("loop", "algo.clip_eps=0", "algo.clip_eps"),  # a shared PPO key, checked for every method
    ],
)
def test_each_algorithm_validates_its_keys(compose_train_cfg: Compose, algo: str, override: str, key: str) -> None:
    cfg = compose_train_cfg([f"algo={algo}", override])
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    assert key in str(err.value)


def test_a_bad_target_is_a_config_error(compose_train_cfg: Compose) -> None:
    cfg = compose_train_cfg(["algo._target_=vldac_lightning.algo.nothing.Here"])
    with pytest.raises(ConfigError, match="algo._target_"):
        validate_config(cfg)
    with pytest.raises(ConfigError, match="not a vldac_lightning.algo.base.Algorithm"):
        algorithm_class(OmegaConf.create({"_target_": "collections.OrderedDict"}))


def test_the_fig4_ladder_composes_on_rl4vlm(compose_train_cfg: Compose) -> None:
    rungs = {}
    for rung in ("rl4vlm", "kl", "warmup", "stopgrad", "token"):
        cfg = compose_train_cfg(["algo=rl4vlm", f"+ladder={rung}"])
        validate_config(cfg)
        a = build_algorithm(cfg.algo)
        rungs[rung] = (a.kl_beta, a.warmup_updates, a.value_stop_grad, a.ratio_level)
    assert rungs == {
        "rl4vlm": (0.0, 0, False, "step"), "kl": (0.05, 0, False, "step"), "warmup": (0.05, 2, False, "step"),
        "stopgrad": (0.05, 2, True, "step"), "token": (0.05, 2, True, "token"),
    }


def test_rl4vlm_lambda_follows_the_env(compose_train_cfg: Compose) -> None:
    assert compose_train_cfg(["algo=rl4vlm"]).algo.thought_lambda == 0.5  # gym-cards
    assert compose_train_cfg(["algo=rl4vlm", "env=alfworld"]).algo.thought_lambda == 0.2
