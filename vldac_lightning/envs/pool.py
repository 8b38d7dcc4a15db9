"""``EnvPool``: N copies of a language env, stepped together, with per-episode statistics."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv

from .frames import FrameHistory

__all__ = ["EnvPool", "EpisodeStats", "PoolStep", "eval_seeds", "train_seeds"]

_SEEDS_PER_BASE = 10_000
_EVAL_OFFSET = 1_000_000_000  # train seeds live in [0, 1e9), eval seeds in [1e9, 2e9)


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


@dataclass(frozen=True)
class EpisodeStats:
    """One finished episode of one env copy."""

    env_index: int
    seed: int | None  # the seed this copy was last reset with (None: never seeded)
    episode_index: int  # episodes this copy finished since that reset: (seed, episode_index) is reproducible
    episode_return: float
    length: int
    success: bool
    parse_failures: int
    invalid_actions: int  # steps with action_valid False (parse failures included)


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

    @property
    def done(self) -> np.ndarray:
        return self.terminated | self.truncated


def _obs_item(images: np.ndarray, num_images: Any, text: str) -> dict[str, Any]:
    return {"images": images[: int(num_images)], "text": str(text)}


def _unbatch_info(infos: Mapping[str, Any], i: int) -> dict[str, Any]:
    """Env ``i``'s entries of a vector-env info dict (drops the ``_key`` masks)."""
    out: dict[str, Any] = {}
    for key, value in infos.items():
        if key.startswith("_") or key in ("final_obs", "final_info"):
            continue
        mask = infos.get(f"_{key}")
        if mask is not None and not mask[i]:
            continue
        if isinstance(value, Mapping):
            out[key] = _unbatch_info(value, i)
        else:
            item = value[i]
            out[key] = item.item() if isinstance(item, np.generic) else item
    return out


class EnvPool:
    """N env copies in subprocesses (``mode="async"``) or in-process (``mode="sync"``).

    Built on gymnasium's vector API with ``autoreset_mode=AutoresetMode.SAME_STEP``, chosen
    explicitly (gymnasium's default, NEXT_STEP, wastes a step that ignores its action): on the step
    that ends an episode, the returned observation is already the next episode's first observation
    and the finished episode's last observation is in ``PoolStep.final_obs`` (its info in
    ``PoolStep.infos``); the rollout uses it to bootstrap truncated episodes. Auto-resets pass no
    seed, so a copy's later episodes continue its RNG stream from the last seeded reset.

    Async mode uses ``shared_memory=False`` (text observations cannot live in shared memory) and the
    ``spawn`` context by default (fork is unsafe once torch/OpenGL threads exist).
    """

    def __init__(
        self,
        env_fns: Sequence[Callable[[], gym.Env]],
        *,
        mode: str = "async",
        seeds: Sequence[int],
        context: str = "spawn",
    ) -> None:
        if not env_fns:
            raise ValueError("EnvPool needs at least one env_fn")
        if mode not in ("async", "sync"):
            raise ValueError(f"mode={mode!r} is not valid; choose one of ['async', 'sync']")
        self.seeds = self._check_seeds(seeds, len(env_fns))
        self.mode = mode
        if mode == "async":
            self.vec: gym.vector.VectorEnv = AsyncVectorEnv(
                list(env_fns), shared_memory=False, context=context, autoreset_mode=AutoresetMode.SAME_STEP
            )
        else:
            self.vec = SyncVectorEnv(list(env_fns), autoreset_mode=AutoresetMode.SAME_STEP)
        self.num_envs = len(env_fns)
        self._closed = False
        self._action_names: tuple[str, ...] | None = None
        self._episode_seeds: list[int | None] = [None] * self.num_envs
        self._episode_index = [0] * self.num_envs
        # Observations share their history frames across steps, so a rollout stores each frame once.
        self._frames = [FrameHistory() for _ in range(self.num_envs)]
        self._zero_counters()

    @staticmethod
    def _check_seeds(seeds: Sequence[int], n: int) -> list[int]:
        seeds = [int(s) for s in seeds]
        if len(seeds) != n:
            raise ValueError(f"need one seed per env: got {len(seeds)} seeds for {n} envs")
        if len(set(seeds)) != n:
            raise ValueError(f"seeds must be distinct per env copy, got {seeds}")
        return seeds

    def _zero_counters(self) -> None:
        n = self.num_envs
        self._returns = np.zeros(n, np.float64)
        self._lengths = np.zeros(n, np.int64)
        self._parse_failures = np.zeros(n, np.int64)
        self._invalid = np.zeros(n, np.int64)

    # --- API -------------------------------------------------------------------------------
    @property
    def action_names(self) -> tuple[str, ...]:
        if self._action_names is None:
            self._action_names = tuple(self.vec.get_attr("action_names")[0])
        return self._action_names

    def reset(self, seeds: Sequence[int] | None = None) -> list[dict[str, Any]]:
        """Reset every copy with ``seeds`` (default: the pool's seeds) and zero the statistics."""
        seeds = self.seeds if seeds is None else self._check_seeds(seeds, self.num_envs)
        obs, _ = self.vec.reset(seed=list(seeds))
        self._episode_seeds = list(seeds)
        self._episode_index = [0] * self.num_envs
        self._zero_counters()
        return self._split_obs(obs)

    def step(self, texts: Sequence[str]) -> PoolStep:
        """Step every copy with its generated text."""
        if len(texts) != self.num_envs:
            raise ValueError(f"need one text per env: got {len(texts)} for {self.num_envs} envs")
        obs, rewards, terminated, truncated, infos = self.vec.step(tuple(str(t) for t in texts))
        rewards = np.asarray(rewards, np.float32)
        terminated = np.asarray(terminated, bool)
        truncated = np.asarray(truncated, bool)
        done = terminated | truncated
        final_mask = infos.get("_final_info", np.zeros(self.num_envs, bool))
        final_infos = infos.get("final_info", {})
        final_obs_arr = infos.get("final_obs")

        step_infos: list[dict[str, Any]] = []
        final_obs: list[dict[str, Any] | None] = [None] * self.num_envs
        episodes: list[EpisodeStats] = []
        for i in range(self.num_envs):
            info = _unbatch_info(final_infos, i) if final_mask[i] else _unbatch_info(infos, i)
            step_infos.append(info)
            self._returns[i] += float(rewards[i])
            self._lengths[i] += 1
            self._parse_failures[i] += not info.get("parse_ok", True)
            self._invalid[i] += not info.get("action_valid", True)
            if not done[i]:
                continue
            last = final_obs_arr[i] if final_obs_arr is not None else None
            if last is not None:
                final_obs[i] = _obs_item(last["images"], last["num_images"], last["text"])
            episodes.append(
                EpisodeStats(
                    env_index=i,
                    seed=self._episode_seeds[i],
                    episode_index=self._episode_index[i],
                    episode_return=float(self._returns[i]),
                    length=int(self._lengths[i]),
                    success=bool(info.get("success", self._returns[i] > 0)),
                    parse_failures=int(self._parse_failures[i]),
                    invalid_actions=int(self._invalid[i]),
                )
            )
            self._episode_index[i] += 1
            self._returns[i] = 0.0
            self._lengths[i] = self._parse_failures[i] = self._invalid[i] = 0
        return PoolStep(
            obs=self._split_obs(obs),
            rewards=rewards,
            terminated=terminated,
            truncated=truncated,
            infos=step_infos,
            final_obs=final_obs,
            episodes=episodes,
        )

    def call_oracle_texts(self) -> list[str | None]:
        """Each copy's oracle answer for its current state (None where there is none)."""
        return list(self.vec.call("oracle_text"))

    def close(self) -> None:
        """Close every copy; in async mode, join the worker processes. Idempotent."""
        if not self._closed:
            self._closed = True
            self.vec.close()

    def __enter__(self) -> EnvPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- helpers ---------------------------------------------------------------------------
    def _split_obs(self, obs: Mapping[str, Any]) -> list[dict[str, Any]]:
        images, counts, texts = obs["images"], obs["num_images"], obs["text"]
        return [
            {"images": self._frames[i].push(images[i][: int(counts[i])]), "text": str(texts[i])}
            for i in range(self.num_envs)
        ]
