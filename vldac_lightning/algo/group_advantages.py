"""Critic-free advantages from task groups of whole episodes (LOOP, GRPO, GiGPO; docs/algorithm.md).

Inputs are flat over the S env steps of a grouped rollout (rollout/episodes.py), in collection order:
the steps of one episode appear in time order. Groups may be ragged: an episode lost to a crashed
env worker is left out (``valid`` False), and its group's statistics use the survivors. A group (or
an anchor-state group) with fewer than two members has no baseline to compare with: advantage 0.

Standard deviations are the *sample* std (``unbiased=True``), as in the GRPO/GiGPO reference
implementations (verl, verl-agent), with ``eps`` added to the denominator.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Sequence
from typing import NamedTuple

import torch

__all__ = [
    "EpisodeReturns",
    "anchor_step_advantages",
    "broadcast_to_steps",
    "discounted_returns_to_go",
    "episode_returns",
    "group_leave_one_out",
    "group_normalized",
]

SCALES = ("std", "none")


class EpisodeReturns(NamedTuple):
    """One entry per complete (not dropped) episode of the rollout."""

    episode_ids: torch.Tensor  # [E] long
    returns: torch.Tensor  # [E] float, Σ_t r_t of the episode
    group_ids: torch.Tensor  # [E] long, the task group it was played in


def episode_returns(
    rewards: torch.Tensor,  # [S]
    episode_ids: torch.Tensor,  # [S] long
    group_ids: torch.Tensor,  # [S] long
    valid: torch.Tensor | None = None,  # [S] bool, False on dropped episodes' steps
) -> EpisodeReturns:
    """Undiscounted return of every complete episode (the sum of its rewards, terminal penalties included)."""
    keep = torch.ones_like(rewards, dtype=torch.bool) if valid is None else valid.bool()
    ids = torch.unique(episode_ids[keep])  # sorted
    returns = torch.stack([rewards[keep & (episode_ids == e)].sum() for e in ids]) if len(ids) else rewards[:0]
    groups = torch.stack([group_ids[episode_ids == e][0] for e in ids]) if len(ids) else group_ids[:0]
    return EpisodeReturns(ids, returns.float(), groups)


def _members(groups: Sequence[Hashable]) -> dict[Hashable, list[int]]:
    out: dict[Hashable, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        out[g].append(i)
    return out


def group_normalized(
    values: torch.Tensor,  # [E] e.g. episode returns
    groups: Sequence[Hashable],  # [E] group key of each entry
    *,
    scale: str = "std",
    eps: float = 1e-6,
) -> torch.Tensor:  # [E]
    """``(x − mean_group x) / F`` with F = std_group x + eps (``scale="std"``) or 1 (``"none"``).

    GRPO's episode advantage and GiGPO's two advantages (its "mean-norm" option is ``scale="none"``).
    """
    if scale not in SCALES:
        raise ValueError(f"scale={scale!r}; choose one of {SCALES}")
    out = torch.zeros_like(values, dtype=torch.float32)
    for members in _members(groups).values():
        if len(members) < 2:
            continue
        x = values[members].float()
        centred = x - x.mean()
        out[members] = centred / (x.std(unbiased=True) + eps) if scale == "std" else centred
    return out


def group_leave_one_out(
    values: torch.Tensor,  # [E] episode returns
    groups: Sequence[Hashable],  # [E]
) -> torch.Tensor:  # [E]
    """LOOP's advantage: an episode's return minus the mean return of the *other* episodes of its group."""
    out = torch.zeros_like(values, dtype=torch.float32)
    for members in _members(groups).values():
        k = len(members)
        if k < 2:
            continue
        x = values[members].float()
        out[members] = x - (x.sum() - x) / (k - 1)
    return out


def discounted_returns_to_go(
    rewards: torch.Tensor,  # [S]
    episode_ids: torch.Tensor,  # [S] long; an episode's steps in time order
    gamma: float,
) -> torch.Tensor:  # [S]
    """``R_t = Σ_{k≥t} γ^{k−t} r_k`` within each episode (GiGPO's step return)."""
    out = torch.zeros_like(rewards, dtype=torch.float32)
    future: dict[int, float] = {}
    for t in reversed(range(rewards.shape[0])):
        e = int(episode_ids[t])
        future[e] = float(rewards[t]) + gamma * future.get(e, 0.0)
        out[t] = future[e]
    return out


def anchor_step_advantages(
    step_returns: torch.Tensor,  # [S] discounted return-to-go of each step
    anchor_keys: Sequence[Hashable],  # [S] identical observations ⇔ identical keys
    group_ids: torch.Tensor,  # [S] long
    valid: torch.Tensor | None = None,  # [S] bool
    *,
    scale: str = "std",
    eps: float = 1e-6,
) -> torch.Tensor:  # [S]
    """GiGPO's step-level advantage: steps of one task group that saw the same observation (an
    *anchor state*, met by any trajectory at any step) are compared by their returns-to-go."""
    keep = [True] * len(anchor_keys) if valid is None else valid.bool().tolist()
    keys = [(int(g), k) if ok else ("dropped", i) for i, (g, k, ok) in enumerate(zip(group_ids, anchor_keys, keep))]
    out = group_normalized(step_returns, keys, scale=scale, eps=eps)
    return out * torch.tensor(keep, dtype=out.dtype)


def broadcast_to_steps(
    per_episode: torch.Tensor,  # [E] one value per episode
    ids: torch.Tensor,  # [E] their episode ids
    step_episode_ids: torch.Tensor,  # [S] the episode of every step
) -> torch.Tensor:  # [S]
    """Each step gets its episode's value; steps of episodes not in ``ids`` (dropped ones) get 0."""
    lookup = {int(e): float(a) for e, a in zip(ids, per_episode)}
    return torch.tensor([lookup.get(int(e), 0.0) for e in step_episode_ids], dtype=torch.float32)
