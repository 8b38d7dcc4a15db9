"""Every algorithm composes, validates its own keys (errors name the key), and is selected by its
config alone; the Fig. 4 ladder composes on algo=rl4vlm."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

from vldac_lightning.algo.base import Algorithm, algorithm_class, build_algorithm
from vldac_lightning.algo.group import GroupAlgorithm
from vldac_lightning.algo.group_advantages import broadcast_to_steps, episode_returns, group_normalized
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


class MeanNormGRPO(GroupAlgorithm):
    """README's "sixth algorithm" example: GRPO without the std."""

    name = "meannorm"

    def step_advantages(self, rollout, rewards, episode_ids, group_ids, valid):  # type: ignore[no-untyped-def]
        episodes = episode_returns(rewards, episode_ids, group_ids, valid)
        per_episode = group_normalized(episodes.returns, episodes.group_ids.tolist(), scale="none")
        return broadcast_to_steps(per_episode, episodes.episode_ids, episode_ids)


def test_a_sixth_algorithm_is_one_class_plus_one_config(tmp_path: Path) -> None:
    """The README's recipe, done: a config file naming a new class is all ``algo=meannorm`` needs."""
    import shutil

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from tests.algo.test_group_advantages import GIGPO_STEPS, grouped_rollout

    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    (conf / "algo" / "meannorm.yaml").write_text(
        "# @package _global_\ndefaults:\n  - /algo/shared/ppo@algo\n  - _self_\n"
        f"algo:\n  _target_: {__name__}.MeanNormGRPO\n  name: meannorm\nenv:\n  group_size: 4\n")
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
            cfg = compose("train.yaml", overrides=["algo=meannorm", "logger=none", "paths.log_dir=/tmp/unused"])
    finally:
        GlobalHydra.instance().clear()
    validate_config(cfg)
    algorithm = build_algorithm(cfg.algo)
    assert isinstance(algorithm, MeanNormGRPO) and algorithm.needs().whole_episodes
    # Group 0 returns 1, 4 → mean 2.5 → ∓1.5;  group 1 returns 0, 3 → mean 1.5 → ∓1.5.
    advantages = algorithm.targets(grouped_rollout(GIGPO_STEPS)).advantages.squeeze(1)
    assert advantages.tolist() == pytest.approx([-1.5, 1.5, -1.5, 1.5, -1.5, 1.5, -1.5, 1.5, 1.5])
