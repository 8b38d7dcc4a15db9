"""The seam between the PPO iteration and the RL method: one :class:`Algorithm` object per method.

An algorithm declares what a rollout must record (:class:`RolloutNeeds`), turns a finished rollout
into advantages and value targets (:meth:`Algorithm.targets`), and turns one scored minibatch into
a loss and its logged stats (:meth:`Algorithm.loss`). It validates its own config keys. Everything
else — collecting, minibatching, gradient accumulation, optimizer steps, logging — is the same for
every method and lives in the one owner of the iteration (``ActorCriticModule.training_step``).

Selected by ``algo=<name>``: ``conf/algo/<name>.yaml`` names the class in ``_target_``. Adding a
method is one file here plus one config (README "Algorithms"; docs/algorithm.md).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from vldac_lightning.algo.losses import LossStats
from vldac_lightning.rollout.buffer import Minibatch, Rollout

log = logging.getLogger(__name__)

__all__ = ["Algorithm", "RolloutNeeds", "Targets", "algorithm_class", "build_algorithm"]


@dataclass(frozen=True)
class RolloutNeeds:
    """What the collector must record for an algorithm (anything else is skipped)."""

    ref_logprobs: bool = False  # log π_ref per token (KL to the adapter-free base model)
    action_spans: bool = False  # the action-token mask of every response (RL4VLM)
    whole_episodes: bool = False  # task-grouped rounds of complete episodes (LOOP, GRPO, GiGPO)


@dataclass
class Targets:
    """What an algorithm derives from a finished rollout, before any update."""

    advantages: torch.Tensor  # [T, N] Â per env step, as the loss consumes it (standardised if so configured)
    returns: torch.Tensor | None  # [T, N] value targets R̂; None without a critic
    metrics: dict[str, float] = field(default_factory=dict)  # logged with the rollout's metrics


class Algorithm:
    """Base class of every RL method; subclasses set the class attributes and override the hooks.

    ``cfg`` is the ``algo`` config node (a DictConfig or a plain mapping). Keys every method shares
    (rollout size, epochs, minibatches, clipping, KL) are validated here; a subclass validates its own
    in :meth:`validate_keys`.
    """

    name: ClassVar[str] = ""
    has_critic: ClassVar[bool] = False  # a value head is trained (values are scored in the update)
    episode_level: ClassVar[bool] = False  # advantages need grouped, complete episodes
    value_stop_grad: bool = True  # the value loss stops at the backbone (the head alone learns)

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        self.cfg = cfg
        self.clip_eps = float(cfg["clip_eps"])
        self.kl_beta = float(cfg["kl_beta"])
        self.kl_reference = str(cfg["kl_reference"])
        self.warmup_updates = int(cfg["warmup_updates"]) if self.has_critic else 0

    # ----------------------------------------------------------------------------- config
    @classmethod
    def validate(cls, cfg: Any) -> None:
        """Check the whole run config's ``algo`` keys (and what they imply about ``env``)."""
        from vldac_lightning.utils.config import ConfigError, _choice, _number

        _number(cfg, "algo.clip_eps", lo=0, lo_open=True)
        _number(cfg, "algo.kl_beta", lo=0)
        _choice(cfg, "algo.kl_reference", ("base", "old"))
        _number(cfg, "algo.entropy_coef", lo=0)
        if float(cfg.algo.entropy_coef) != 0.0:
            raise ConfigError("algo.entropy_coef is not implemented (the paper uses none); keep it at 0")
        _number(cfg, "algo.warmup_updates", integer=True, lo=0)
        epochs = _number(cfg, "algo.ppo_epochs", integer=True, lo=1)
        mb = _number(cfg, "algo.minibatch_size", integer=True, lo=1)
        accum = _number(cfg, "algo.grad_accum_steps", integer=True, lo=1)
        rollout = _number(cfg, "algo.rollout_steps", integer=True, lo=1)
        total = _number(cfg, "algo.total_env_steps", integer=True, lo=1)
        _number(cfg, "algo.max_grad_norm", lo=0, lo_open=True, allow_inf=True)  # inf: no clipping
        _number(cfg, "algo.max_bad_updates", integer=True, lo=1)
        num_envs = int(cfg.env.num_envs)
        group = _number(cfg, "env.group_size", integer=True, lo=1)
        if num_envs % group:
            raise ConfigError(f"env.num_envs={num_envs} is not divisible by env.group_size={group}; "
                              f"every task group needs all of its {group} env copies")
        if rollout % num_envs:
            raise ConfigError(f"algo.rollout_steps={rollout} is not divisible by env.num_envs={num_envs}; "
                              f"every env must take the same number of steps per rollout")
        if rollout % mb:
            raise ConfigError(f"algo.rollout_steps={rollout} is not divisible by algo.minibatch_size={mb}")
        if (epochs * rollout // mb) % accum:
            raise ConfigError(f"algo.ppo_epochs × rollout_steps / minibatch_size = {epochs * rollout // mb} "
                              f"minibatches per iteration is not divisible by algo.grad_accum_steps={accum}")
        if total < rollout:
            raise ConfigError(f"algo.total_env_steps={total} is smaller than one rollout "
                              f"(algo.rollout_steps={rollout})")
        if total % rollout:
            log.warning("algo.total_env_steps=%d is not a multiple of algo.rollout_steps=%d: the run trains %d "
                        "iterations = %d env steps", total, rollout, total // rollout, total // rollout * rollout)
        cls.validate_keys(cfg)

    @classmethod
    def validate_keys(cls, cfg: Any) -> None:
        """The method's own ``algo.*`` keys; raise ``ConfigError`` naming the key and the fix."""

    # ----------------------------------------------------------------------------- the hooks
    def needs(self) -> RolloutNeeds:
        """What the rollout must record. Reference log-probs only when a KL to the base model counts."""
        return RolloutNeeds(ref_logprobs=self.kl_beta > 0 and self.kl_reference == "base")

    def policy_frozen(self, iteration: int) -> bool:
        """Value warm-up: in the first ``warmup_updates`` iterations only the critic learns."""
        return iteration < self.warmup_updates

    def targets(self, rollout: Rollout) -> Targets:
        """Advantages (and value targets) of a finished rollout; computed once, before the update."""
        raise NotImplementedError

    def loss(
        self,
        mb: Minibatch,  # on the policy's device
        logprobs: torch.Tensor,  # [B, R] log π_θ of the minibatch's response tokens, with grad
        values: torch.Tensor | None,  # [B] V_φ(s_t) with grad, None without a critic
        *,
        policy_frozen: bool,
    ) -> tuple[torch.Tensor, LossStats]:
        """The minibatch's loss (to minimise) and its stats."""
        raise NotImplementedError


def algorithm_class(algo_cfg: Any) -> type[Algorithm]:
    """The :class:`Algorithm` subclass named by ``algo._target_``."""
    from hydra.utils import get_class

    from vldac_lightning.utils.config import ConfigError

    target = algo_cfg.get("_target_") if hasattr(algo_cfg, "get") else None
    if not target:
        raise ConfigError("algo._target_ is missing; choose an algorithm with algo=<name> "
                          "(the files under conf/algo/)")
    try:
        cls = get_class(str(target))
    except Exception as error:  # hydra wraps the import error
        raise ConfigError(f"algo._target_={target!r} cannot be imported ({error}); "
                          "it must name an Algorithm class, e.g. vldac_lightning.algo.vldac.VLDAC") from error
    if not (isinstance(cls, type) and issubclass(cls, Algorithm)):
        raise ConfigError(f"algo._target_={target!r} is not a vldac_lightning.algo.base.Algorithm subclass")
    return cls


def build_algorithm(algo_cfg: Any) -> Algorithm:
    """Instantiate the algorithm of an ``algo`` config node."""
    return algorithm_class(algo_cfg)(algo_cfg)
