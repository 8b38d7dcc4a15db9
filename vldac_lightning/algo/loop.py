"""LOOP: leave-one-out PPO without a critic (docs/algorithm.md#loop).

Chen et al., "Reinforcement Learning for Long-Horizon Interactive LLM Agents", 2025, arXiv:2502.01600.

K episodes per task; an episode's advantage is its return minus the mean return of the group's
other K−1 episodes, given to every token of every step of that episode; token-level clipped PPO.
"""

from __future__ import annotations

import torch

from vldac_lightning.algo.group import GroupAlgorithm
from vldac_lightning.algo.group_advantages import broadcast_to_steps, episode_returns, group_leave_one_out
from vldac_lightning.rollout.buffer import Rollout

__all__ = ["LOOP"]


class LOOP(GroupAlgorithm):
    name = "loop"

    def step_advantages(self, rollout: Rollout, rewards: torch.Tensor, episode_ids: torch.Tensor,
                        group_ids: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        episodes = episode_returns(rewards, episode_ids, group_ids, valid)
        per_episode = group_leave_one_out(episodes.returns, episodes.group_ids.tolist())  # [E]
        return broadcast_to_steps(per_episode, episodes.episode_ids, episode_ids)

