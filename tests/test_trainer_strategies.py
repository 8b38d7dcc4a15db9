"""trainer=ddp / trainer=fsdp compose, their strategies instantiate, and global sizes that do not split
over the ranks are refused at config time (the 2-process run itself: tests/integration/test_ddp.py)."""

from __future__ import annotations

from collections.abc import Callable

import hydra
import pytest
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy
from omegaconf import DictConfig, OmegaConf

from vldac_lightning.utils.config import ConfigError, validate_config
from vldac_lightning.utils.distributed import (
    decoder_layer_wrap_policy,
    local_minibatch,
    world_size_from_trainer,
)

Compose = Callable[..., DictConfig]


def test_ddp_composes_validates_and_builds_a_ddp_strategy(compose_train_cfg: Compose) -> None:
    cfg = compose_train_cfg(["trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2", "env.num_envs=32"])
    validate_config(cfg)
    assert world_size_from_trainer(cfg.trainer) == 8
    strategy = hydra.utils.instantiate(cfg.trainer.strategy)
    assert isinstance(strategy, DDPStrategy)
    assert strategy._ddp_kwargs["find_unused_parameters"] is True
    assert strategy._timeout.total_seconds() == 180 * 60


def test_fsdp_composes_with_a_7b_recipe_and_wraps_decoder_layers(compose_train_cfg: Compose) -> None:
    cfg = compose_train_cfg(["experiment=paper_ezpoints_qwen2vl_7b", "trainer=fsdp"])
    validate_config(cfg)
    OmegaConf.to_container(cfg, resolve=True)
    assert world_size_from_trainer(cfg.trainer) == 8
    strategy = hydra.utils.instantiate(cfg.trainer.strategy)
    assert isinstance(strategy, FSDPStrategy)
    names = {c.__name__ for c in decoder_layer_wrap_policy()}
    assert "Qwen2VLDecoderLayer" in names


def test_a_missing_layer_class_gets_a_clear_error() -> None:
    with pytest.raises(ValueError, match="auto_wrap_policy.class_paths"):
        decoder_layer_wrap_policy(("transformers.NoSuchLayer",))


@pytest.mark.parametrize("overrides", [
    ["env.num_envs=3", "algo.rollout_steps=6", "algo.minibatch_size=6"],
    ["env.num_envs=2", "algo.rollout_steps=6", "algo.minibatch_size=3"],
])
def test_sizes_that_do_not_split_over_the_ranks_are_refused(compose_train_cfg: Compose, overrides: list[str]) -> None:
    cfg = compose_train_cfg(["debug=smoke", "trainer=ddp", "trainer.devices=2", "algo.grad_accum_steps=1", *overrides])
    odd = next(o for o in overrides if int(o.split("=")[1]) % 2)
    with pytest.raises(ConfigError, match=odd.replace(".", r"\.") + ".* does not split over 2 training processes"):
        validate_config(cfg)


def test_an_optimizer_step_batch_splits_its_minibatch_else_its_accumulation() -> None:
    assert local_minibatch(8, 2, 2) == (4, 2)  # 8 x 2 = 2 ranks x 4 x 2
    assert local_minibatch(1, 128, 8) == (1, 16)  # the 7B recipes: 1 x 128 = 8 ranks x 1 x 16
    assert local_minibatch(4, 1, 1) == (4, 1)
    with pytest.raises(ValueError, match="multiple of 4"):
        local_minibatch(2, 2, 4)


def test_task_groups_must_not_straddle_ranks(compose_train_cfg: Compose) -> None:
    cfg = compose_train_cfg(["debug=smoke", "algo=grpo", "trainer=ddp", "trainer.devices=2", "env.num_envs=6",
                             "env.group_size=2", "algo.rollout_steps=12", "algo.minibatch_size=4"])
    with pytest.raises(ConfigError, match="whole task groups"):
        validate_config(cfg)


def test_one_process_counts_as_one_rank(compose_train_cfg: Compose) -> None:
    assert world_size_from_trainer(compose_train_cfg([]).trainer) == 1
    assert world_size_from_trainer({"strategy": "ddp", "devices": [0, 1, 2]}) == 3
