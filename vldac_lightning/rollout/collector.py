"""Rollout collection: the policy acts in a pool of envs for T steps, producing a ``Rollout``.

The collector only gathers experience (TRL's rollout phase); advantages are computed by the
caller when the rollout ends and the loss only ever consumes a buffered minibatch.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from vldac_lightning.envs.pool import success_by_task_type
from vldac_lightning.rollout.buffer import Rollout
from vldac_lightning.rollout.policy import RolloutPolicy
from vldac_lightning.utils.distributed import all_gather_object, world_size
from vldac_lightning.utils.interrupt import raise_if_stop_requested
from vldac_lightning.utils.progress import Progress


@dataclass
class StepRecord:
    """What the update needs to re-score one env step: the observation and the response tokens."""

    obs: dict[str, Any]  # {"images": uint8 [n, H, W, 3], "text": str}
    response_ids: torch.Tensor  # [R_t] int64, the generated tokens incl. the end token
    # The processor's output for ``obs`` (VLMPolicy.split), so PPO epochs skip the processor; None
    # means re-encode from ``obs``.
    encoded: dict[str, torch.Tensor] | None = None


@dataclass
class RolloutStats:
    """Counters of one rollout, turned into ``rollout/*`` metrics (docs/metrics.md#rollout-metrics)."""

    episodes: list[Any] = field(default_factory=list)  # EpisodeStats of episodes that finished
    steps: int = 0
    parse_failures: int = 0
    invalid_actions: int = 0
    generated_tokens: int = 0
    seconds: float = 0.0
    generate_seconds: float = 0.0
    dropped_episodes: int = 0  # unfinished episodes lost to a failed env worker (masked out)
    env_restarts: int = 0  # the pool's worker restarts so far (cumulative over the run)
    sample: tuple[dict[str, Any], str] | None = None  # (observation, generated text) of env 0

    def over_ranks(self) -> RolloutStats:
        """These stats merged with every other rank's (DDP): episodes and counters add up, times are
        the slowest rank's (the ranks collect in parallel). ``self`` outside a distributed run."""
        if world_size() == 1:
            return self
        parts = all_gather_object(replace(self, sample=None))
        return RolloutStats(
            episodes=[e for p in parts for e in p.episodes],
            steps=sum(p.steps for p in parts),
            parse_failures=sum(p.parse_failures for p in parts),
            invalid_actions=sum(p.invalid_actions for p in parts),
            generated_tokens=sum(p.generated_tokens for p in parts),
            seconds=max(p.seconds for p in parts),
            generate_seconds=max(p.generate_seconds for p in parts),
            dropped_episodes=sum(p.dropped_episodes for p in parts),
            env_restarts=sum(p.env_restarts for p in parts),
            sample=self.sample,
        )

    def metrics(self, prefix: str = "rollout") -> dict[str, float]:
        out = {
            f"{prefix}/parse_failure_rate": self.parse_failures / max(self.steps, 1),
            f"{prefix}/invalid_action_rate": self.invalid_actions / max(self.steps, 1),
            f"{prefix}/env_steps_per_s": self.steps / max(self.seconds, 1e-9),
            f"{prefix}/tokens_per_s": self.generated_tokens / max(self.generate_seconds, 1e-9),
            f"{prefix}/env_restarts": float(self.env_restarts),
            f"{prefix}/dropped_episodes": float(self.dropped_episodes),
        }
        if self.episodes:
            out[f"{prefix}/episode_return"] = float(np.mean([e.episode_return for e in self.episodes]))
            out[f"{prefix}/success_rate"] = float(np.mean([float(e.success) for e in self.episodes]))
            out[f"{prefix}/episode_length"] = float(np.mean([e.length for e in self.episodes]))
            out[f"{prefix}/episodes"] = float(len(self.episodes))
            out.update(success_by_task_type(self.episodes, prefix))
        return out


def _count_failures(stats: RolloutStats, infos: Sequence[dict[str, Any]]) -> None:
    for info in infos:
        stats.parse_failures += int(not info.get("parse_ok", True))
        stats.invalid_actions += int(not info.get("action_valid", True))


class RolloutCollector:
    """Steps a pool with a policy; keeps the pool's current observations between rollouts."""

    def __init__(self, pool: Any, policy: RolloutPolicy, steps_per_env: int) -> None:
        if steps_per_env < 1:
            raise ValueError(f"rollout steps per env must be >= 1, got {steps_per_env}")
        self.pool = pool
        self.policy = policy
        self.steps_per_env = steps_per_env
        self.obs: list[dict[str, Any]] | None = None

    def reset(self, seeds: Sequence[int] | None = None) -> None:
        self.obs = self.pool.reset(seeds)

    @torch.no_grad()
    def collect(self, progress: Any = None, needs: Any = None) -> tuple[Rollout, RolloutStats]:
        """Collect T = ``steps_per_env`` steps in each of the pool's N envs.

        ``needs`` (``algo.base.RolloutNeeds``; None = everything) says whether to keep reference
        log-probs and to record each response's action span.
        """
        keep_ref = needs is None or needs.ref_logprobs
        spans = needs is not None and needs.action_spans
        if self.obs is None:
            self.reset()
        assert self.obs is not None
        T, N = self.steps_per_env, self.pool.num_envs
        rewards = torch.zeros(T, N)
        terminated = torch.zeros(T, N, dtype=torch.bool)
        truncated = torch.zeros(T, N, dtype=torch.bool)
        values = torch.zeros(T, N)
        next_values = torch.zeros(T, N)
        valid = torch.ones(T, N, dtype=torch.bool)
        # Per env: the rollout step where its current episode began (for dropping it on a crash).
        episode_start = [0] * N
        records: list[StepRecord] = []
        logprobs, ref_logprobs, masks, action_masks = [], [], [], []
        stats = RolloutStats()
        start = time.perf_counter()
        self.policy.eval()  # no dropout while acting: π_old is the deterministic network
        for t in range(T):
            raise_if_stop_requested()
            t_gen = time.perf_counter()
            out = self.policy.act(self.obs)
            stats.generate_seconds += time.perf_counter() - t_gen
            stats.generated_tokens += int(out.response_mask.sum())
            result = self.pool.step(out.texts)
            for n in range(N):
                encodings = getattr(out, "encodings", None)  # policies without a processor cache: None
                encoded = encodings[n] if encodings is not None else None
                records.append(StepRecord(self.obs[n], out.response_ids[n][out.response_mask[n]].cpu(), encoded))
            logprobs.append(out.logprobs.cpu())
            if keep_ref:
                ref_logprobs.append(out.ref_logprobs.cpu())
            masks.append(out.response_mask.cpu())
            if spans:
                action_masks.append(self.policy.action_mask(out.response_ids, out.response_mask).cpu())
            values[t] = out.values.cpu()
            rewards[t] = torch.as_tensor(result.rewards, dtype=torch.float32)
            terminated[t] = torch.as_tensor(result.terminated)
            truncated[t] = torch.as_tensor(result.truncated) & ~terminated[t]
            # Time-limit truncation bootstraps from V(s_{t+1}) of the *finished* episode
            # (docs/algorithm.md#truncation-and-termination).
            cut = truncated[t].nonzero().flatten().tolist()
            if cut:
                next_values[t, cut] = self.policy.value([result.final_obs[i] for i in cut]).cpu()
            stats.episodes.extend(result.episodes)
            dropped = result.dropped if len(result.dropped) else np.zeros(N, bool)
            for n in np.flatnonzero(dropped).tolist():
                # The worker died mid-episode: that episode's steps in this rollout leave the loss,
                # and the cut stops GAE from crossing into the fresh episode.
                valid[episode_start[n] : t + 1, n] = False
                terminated[t, n] = True
                stats.dropped_episodes += 1
            for n in np.flatnonzero(result.done | dropped).tolist():
                episode_start[n] = t + 1
            stats.steps += N
            _count_failures(stats, result.infos)
            if t == T - 1:
                stats.sample = (self.obs[0], out.texts[0])
            self.obs = result.obs
            if progress is not None:
                progress(t + 1, T)
        # Non-final steps of an episode continue with the next step's value; the rollout's last
        # step bootstraps from V of the observation the next rollout will start from.
        next_values[:-1] = torch.where(truncated[:-1], next_values[:-1], values[1:])
        last = self.policy.value(self.obs).cpu()
        next_values[-1] = torch.where(truncated[-1], next_values[-1], last)
        stats.seconds = time.perf_counter() - start
        stats.env_restarts = int(getattr(self.pool, "restarts", 0))
        R = max(m.shape[1] for m in masks)

        def pad(xs: list[torch.Tensor], value: float = 0.0) -> torch.Tensor:
            return torch.cat([torch.nn.functional.pad(x, (0, R - x.shape[1]), value=value) for x in xs])

        rollout = Rollout(
            rewards=rewards, terminated=terminated, truncated=truncated, values=values, next_values=next_values,
            old_logprobs=pad(logprobs), response_mask=pad([m.float() for m in masks]).bool(), steps=records,
            ref_logprobs=pad(ref_logprobs) if keep_ref else None, valid=None if bool(valid.all()) else valid,
            action_mask=pad([m.float() for m in action_masks]).bool() if spans else None,
        )
        return rollout, stats


@torch.no_grad()
def run_episodes(policy: RolloutPolicy, pool: Any, seeds: Sequence[int], *, do_sample: bool = False,
                 finished: list[Any] | None = None) -> list[Any]:
    """Play exactly one episode per seed (in batches of the pool's size); return their EpisodeStats.

    Envs whose episode already ended keep stepping (the pool is batched) but their later
    episodes are ignored, so every seed contributes exactly one episode. Episodes are appended to
    ``finished`` as they end, so a caller keeps them when a stop signal interrupts the rest.
    """
    policy.eval()
    finished = [] if finished is None else finished
    N = pool.num_envs
    with Progress("evaluation", len(seeds), unit="episodes") as progress:
        for start in range(0, len(seeds), N):
            batch = list(seeds[start : start + N])
            # Filler envs (last batch) get seeds outside every range; their episodes are ignored.
            padded = batch + [2**31 - 1 - i for i in range(N - len(batch))]
            obs = pool.reset(padded)
            done = [False] * N
            for n in range(len(batch), N):
                done[n] = True
            while not all(done):
                raise_if_stop_requested()
                out = policy.act(obs, do_sample=do_sample, with_scores=False)
                result = pool.step(out.texts)
                for ep in result.episodes:
                    if not done[ep.env_index]:
                        done[ep.env_index] = True
                        finished.append(ep)
                        progress.update()
                obs = result.obs
    return finished
