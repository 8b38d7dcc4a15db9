"""The shared shape of the critic-free, episode-level methods (LOOP, GRPO, GiGPO; docs/algorithm.md).

They need task-grouped rollouts of whole episodes (rollout/episodes.py), give every token of every
step of an episode an advantage derived from its group, and train with token-level clipped PPO
(plus a k3 KL to the base model when ``kl_beta > 0``). There is no critic: no value loss, no
warm-up. A subclass only says how a grouped rollout turns into per-step advantages.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from vldac_lightning.algo.base import Algorithm, RolloutNeeds, Targets
from vldac_lightning.algo.group_advantages import episode_returns
from vldac_lightning.algo.losses import LossStats, k3_kl, token_policy_loss
from vldac_lightning.rollout.buffer import Minibatch, Rollout

__all__ = ["GroupAlgorithm"]

log = logging.getLogger(__name__)


class GroupAlgorithm(Algorithm):
    """Base of the critic-free group methods; subclasses implement :meth:`step_advantages`."""

    episode_level = True

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        if int(cfg.get("warmup_updates", 0) or 0) > 0:
            log.info("algo.warmup_updates=%s is ignored by %s: there is no critic to warm up",
                     cfg.get("warmup_updates"), self.name)

    @classmethod
    def validate(cls, cfg: Any) -> None:
        from vldac_lightning.utils.config import ConfigError

        super().validate(cfg)
        k = int(cfg.env.group_size)
        if k < 2:
            raise ConfigError(f"env.group_size={k}: algo={cfg.algo.get('name')} compares the episodes of a task "
                              "group with each other, so it needs env.group_size >= 2 (e.g. env.group_size=4)")

    def needs(self) -> RolloutNeeds:
        return RolloutNeeds(ref_logprobs=super().needs().ref_logprobs, whole_episodes=True)

    def targets(self, rollout: Rollout) -> Targets:
        if rollout.episode_ids is None or rollout.group_ids is None:
            raise ValueError(f"{self.name} needs a grouped whole-episode rollout (rollout/episodes.py)")
        flat = {name: rollout.flat(name) for name in ("rewards", "episode_ids", "group_ids")}
        valid = rollout.flat("valid") if rollout.valid is not None else None
        advantages = self.step_advantages(rollout, flat["rewards"], flat["episode_ids"], flat["group_ids"], valid)
        if valid is not None:
            advantages = torch.where(valid, advantages, torch.zeros_like(advantages))
        episodes = episode_returns(flat["rewards"], flat["episode_ids"], flat["group_ids"], valid)
        metrics = {"train/group_return_std": _mean_group_std(episodes.returns, episodes.group_ids)}
        return Targets(advantages=advantages.reshape(rollout.rewards.shape), returns=None, metrics=metrics)

    def step_advantages(self, rollout: Rollout, rewards: torch.Tensor, episode_ids: torch.Tensor,
                        group_ids: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:  # [S]
        """The advantage of every env step (flat, collection order)."""
        raise NotImplementedError

    def loss(self, mb: Minibatch, logprobs: torch.Tensor, values: torch.Tensor | None, *,
             policy_frozen: bool) -> tuple[torch.Tensor, LossStats]:
        mask = mb.response_mask.bool()
        if mb.valid is not None:
            mask = mask & mb.valid.bool()[:, None]
        ref = mb.ref_logprobs if mb.ref_logprobs is not None else mb.old_logprobs
        l_policy, stats = token_policy_loss(logprobs, mb.old_logprobs, mb.advantages, mask, self.clip_eps)
        l_kl = k3_kl(logprobs, ref, mask)
        loss = l_policy + self.kl_beta * l_kl
        return loss, LossStats(policy_loss=l_policy.detach(), value_loss=None, kl=l_kl.detach(),
                               clip_fraction=stats.clip_fraction, approx_kl=stats.approx_kl, entropy=None)


def _mean_group_std(returns: torch.Tensor, groups: torch.Tensor) -> float:
    """Mean over groups of the std of their episode returns (0: every group agreed, nothing to learn)."""
    stds = [returns[groups == g].std(unbiased=False) for g in torch.unique(groups)]
    return float(torch.stack(stds).mean()) if stds else float("nan")
