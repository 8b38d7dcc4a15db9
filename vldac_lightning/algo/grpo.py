"""GRPO for agents: group-normalised episode returns, no critic (docs/algorithm.md#grpo).

Shao et al., "DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open Language Models",
2024, arXiv:2402.03300 (Group Relative Policy Optimization), applied per episode as in agent RL.

K episodes per task from the same seed; ``A(τ_i) = (R(τ_i) − mean_j R(τ_j)) / (std_j R(τ_j) + ε)``
for every token of every step of τ_i; token-level clipped PPO with a k3 KL to the base model.
"""

from __future__ import annotations

from typing import Any

import torch

from vldac_lightning.algo.group import GroupAlgorithm
from vldac_lightning.algo.group_advantages import broadcast_to_steps, episode_returns, group_normalized
from vldac_lightning.rollout.buffer import Rollout

__all__ = ["GRPO"]


class GRPO(GroupAlgorithm):
    name = "grpo"

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.eps = float(cfg["adv_eps"])

    @classmethod
    def validate_keys(cls, cfg: Any) -> None:
        from vldac_lightning.utils.config import _number

        _number(cfg, "algo.adv_eps", lo=0, lo_open=True)

    def step_advantages(self, rollout: Rollout, rewards: torch.Tensor, episode_ids: torch.Tensor,
                        group_ids: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        episodes = episode_returns(rewards, episode_ids, group_ids, valid)
        per_episode = group_normalized(episodes.returns, episodes.group_ids.tolist(), scale="std", eps=self.eps)
        return broadcast_to_steps(per_episode, episodes.episode_ids, episode_ids)
