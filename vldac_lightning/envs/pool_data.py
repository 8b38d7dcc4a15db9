"""The env pool's plain data: the seed scheme that makes every episode reproducible from two
integers, and what :meth:`EnvPool.step <vldac_lightning.envs.pool.EnvPool.step>` returns.

Seeds (docs/environments.md#seeds): training seeds live in [0, 1e9), evaluation seeds in [1e9, 2e9),
``base_seed * 10_000 + i`` within each; a copy's later episodes hash (copy seed, episode index).
Pretraining data (vldac_lightning/pretrain.py) draws its deals from [2e9, 3e9), so a pretrained
model never saw a deal that training or evaluation plays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "EpisodeStats", "PoolStep", "episode_seed", "eval_seeds", "pretrain_seed", "success_by_task_type", "train_seeds",
]

_SEEDS_PER_BASE = 10_000
_EVAL_OFFSET = 1_000_000_000  # train seeds live in [0, 1e9), eval seeds in [1e9, 2e9)
_PRETRAIN_OFFSET = 2 * _EVAL_OFFSET  # pretraining deals in [2e9, 3e9) (< 2**32, numpy's seed limit)


def _seed_range(offset: int, base_seed: int, n: int) -> list[int]:
    if base_seed < 0 or n < 0:
        raise ValueError(f"base_seed and n must be >= 0, got {base_seed}, {n}")
    if n > _SEEDS_PER_BASE:
        raise ValueError(f"at most {_SEEDS_PER_BASE} seeds per base_seed, got n={n}")
    if (base_seed + 1) * _SEEDS_PER_BASE > _EVAL_OFFSET:
        raise ValueError(f"base_seed must be < {_EVAL_OFFSET // _SEEDS_PER_BASE}, got {base_seed}")
    start = offset + base_seed * _SEEDS_PER_BASE
    return list(range(start, start + n))


def train_seeds(base_seed: int, n: int) -> list[int]:
    """``n`` distinct training seeds for run seed ``base_seed``: ``base_seed*10_000 + i`` (< 1e9)."""
    return _seed_range(0, base_seed, n)


def eval_seeds(base_seed: int, n: int) -> list[int]:
    """``n`` evaluation seeds, disjoint from every train seed: ``1e9 + base_seed*10_000 + i``."""
    return _seed_range(_EVAL_OFFSET, base_seed, n)


def episode_seed(copy_seed: int, episode_index: int) -> int:
    """The reset seed of a copy's ``episode_index``-th episode (the first one uses the copy seed).

    Later seeds are hashed from both numbers and stay in the copy seed's half of the seed space,
    so training episodes never replay an evaluation seed's deal.
    """
    if episode_index == 0:
        return int(copy_seed)
    offset = _EVAL_OFFSET if copy_seed >= _EVAL_OFFSET else 0
    digest = np.random.SeedSequence([int(copy_seed), int(episode_index)]).generate_state(1, np.uint64)[0]
    return offset + int(digest % _EVAL_OFFSET)


def pretrain_seed(base_seed: int, stream: int, index: int) -> int:
    """The reset seed of pretraining example ``index`` of ``stream`` (0: training data, 1: held-out),
    hashed into [2e9, 3e9): disjoint from every training and evaluation seed."""
    if min(base_seed, stream, index) < 0:
        raise ValueError(f"base_seed, stream and index must be >= 0, got {base_seed}, {stream}, {index}")
    digest = np.random.SeedSequence([int(base_seed), int(stream), int(index)]).generate_state(1, np.uint64)[0]
    return _PRETRAIN_OFFSET + int(digest % _EVAL_OFFSET)


@dataclass(frozen=True)
class EpisodeStats:
    """One finished episode of one env copy."""

    env_index: int
    seed: int | None  # this episode's reset seed: episode_seed(copy seed, episode_index)
    episode_index: int  # episodes this copy has begun since the pool's last reset()
    episode_return: float
    length: int
    success: bool
    parse_failures: int
    invalid_actions: int  # steps with action_valid False (parse failures included)
    task_type: str | None = None  # the env's info["task_type"] (ALFWorld), for per-type success


def success_by_task_type(episodes: Sequence[EpisodeStats], prefix: str) -> dict[str, float]:
    """``{prefix}/success_rate/<task type>`` over the episodes whose env reports a task type."""
    groups: dict[str, list[bool]] = {}
    for ep in episodes:
        if ep.task_type:
            groups.setdefault(ep.task_type, []).append(ep.success)
    return {f"{prefix}/success_rate/{t}": float(np.mean(v)) for t, v in sorted(groups.items())}


@dataclass
class PoolStep:
    """The result of :meth:`EnvPool.step` (per-env lists are indexed by env)."""

    # {"images": [n, H, W, 3] uint8 (read-only; shares frames with the env's earlier observations),
    #  "text": str}; for ended envs the NEXT episode's first observation
    obs: list[dict[str, Any]]
    rewards: np.ndarray  # [N] float32
    terminated: np.ndarray  # [N] bool
    truncated: np.ndarray  # [N] bool
    infos: list[dict[str, Any]]  # for ended envs: the final info of the finished episode
    final_obs: list[dict[str, Any] | None]  # last observation of the finished episode, else None
    episodes: list[EpisodeStats]  # episodes finished at this step
    # [N] bool: the copy's worker failed at this step; its unfinished episode is dropped (no
    # EpisodeStats, reward 0) and obs[i] starts a fresh episode.
    dropped: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))

    @property
    def done(self) -> np.ndarray:
        return self.terminated | self.truncated
