"""Task-grouped rollouts of whole episodes, for the episode-level methods (LOOP, GRPO, GiGPO).

The pool's N = G·K copies form G task groups of K copies (``env.group_size=K``); the K copies of a
group begin every episode from the same seed, so they face the same task (docs/algorithm.md).

A rollout is a sequence of *rounds*. In a round every copy plays exactly one episode to its end;
a copy whose episode ended waits (``EnvPool.step(active=...)``: no step, no generation) until the
whole round is over, and the pool has already reset it to its group's next episode. Rounds are
collected until the rollout has at least its env-step budget, so a rollout is whole rounds — G
groups × K complete episodes each — and overshoots the budget by less than one round; the learner
takes the overshoot off the next rollout's budget, so after i iterations a run has used
i · ``algo.rollout_steps`` env steps up to one round, like every other method. Only stepped copies
count as env steps; the x-axis stays honest.

- **Truncated episodes** (the env's time limit) end the episode like a termination: their return is
  what they collected (the methods have no critic to bootstrap from), and they count as complete.
- **A dropped episode** (its env worker crashed or hung; see EnvPool) leaves its round with its steps
  marked invalid (``Rollout.valid``). Its group is *re-balanced*: the group's statistics use the
  K−1 surviving episodes; a group left with fewer than two episodes gets advantage 0. The replaced
  worker starts its group's next episode, so the group stays aligned for the next round.
- **Exact resume**: a rollout ends between rounds, where every copy sits at the start of its next
  episode with no action taken; the pool's ``state_dict`` (seeds + episode indices) restores that
  exactly, with nothing to replay.

The result is a :class:`Rollout` of shape ``[S, 1]``: the S env steps in collection order (the steps
of one episode in time order), with ``episode_ids`` and ``group_ids`` per step.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from vldac_lightning.rollout.buffer import Rollout
from vldac_lightning.rollout.collector import RolloutStats, StepRecord, _count_failures

__all__ = ["EpisodeCollector"]


class EpisodeCollector:
    """Steps a grouped pool round by round until ``step_budget`` env steps are collected."""

    def __init__(self, pool: Any, policy: Any, step_budget: int) -> None:
        if step_budget < 1:
            raise ValueError(f"the rollout's env-step budget must be >= 1, got {step_budget}")
        self.pool = pool
        self.policy = policy
        self.step_budget = step_budget
        self.obs: list[dict[str, Any]] | None = None
        self.rounds = 0  # rounds collected over the run (episode / group ids stay unique per rollout only)

    def reset(self, seeds: Any = None) -> None:
        self.obs = self.pool.reset(seeds)

    @torch.no_grad()
    def collect(self, progress: Any = None, needs: Any = None,
                budget: int | None = None) -> tuple[Rollout, RolloutStats]:
        """Whole rounds of grouped episodes, at least ``budget`` (default ``step_budget``) env steps
        in all — and at least one round."""
        budget = self.step_budget if budget is None else max(int(budget), 1)
        if self.obs is None:
            self.reset()
        assert self.obs is not None
        N, K = self.pool.num_envs, self.pool.group_size
        keep_ref = needs is None or needs.ref_logprobs
        spans = needs is not None and needs.action_spans
        rows: dict[str, list[Any]] = {k: [] for k in ("reward", "terminated", "truncated", "value", "episode",
                                                       "group", "dropped")}
        records: list[StepRecord] = []
        logprobs, ref_logprobs, masks, action_masks = [], [], [], []
        stats = RolloutStats()
        start = time.perf_counter()
        self.policy.eval()  # no dropout while acting: π_old is the deterministic network
        round_index = 0
        while stats.steps < budget:
            active = [True] * N
            # Rows of each copy's episode in this round, to invalidate them if the episode is dropped.
            episode_rows: list[list[int]] = [[] for _ in range(N)]
            while any(active):
                idx = [i for i in range(N) if active[i]]
                t_gen = time.perf_counter()
                out = self.policy.act([self.obs[i] for i in idx])
                stats.generate_seconds += time.perf_counter() - t_gen
                stats.generated_tokens += int(out.response_mask.sum())
                texts = [""] * N
                for j, i in enumerate(idx):
                    texts[i] = out.texts[j]
                result = self.pool.step(texts, active=active)
                dropped = result.dropped if len(result.dropped) else np.zeros(N, bool)
                action_mask = self.policy.action_mask(out.response_ids, out.response_mask).cpu() if spans else None
                for j, i in enumerate(idx):
                    episode_rows[i].append(len(records))
                    encodings = getattr(out, "encodings", None)
                    records.append(StepRecord(self.obs[i], out.response_ids[j][out.response_mask[j]].cpu(),
                                              encodings[j] if encodings is not None else None))
                    logprobs.append(out.logprobs[j].cpu())
                    if keep_ref:
                        ref_logprobs.append(out.ref_logprobs[j].cpu())
                    masks.append(out.response_mask[j].cpu())
                    if action_mask is not None:
                        action_masks.append(action_mask[j])
                    rows["reward"].append(float(result.rewards[i]))
                    rows["terminated"].append(bool(result.terminated[i]))
                    rows["truncated"].append(bool(result.truncated[i]) and not bool(result.terminated[i]))
                    rows["value"].append(float(out.values[j]))
                    rows["episode"].append(round_index * N + i)
                    rows["group"].append(round_index * (N // K) + i // K)
                    rows["dropped"].append(False)
                    if dropped[i]:
                        for r in episode_rows[i]:
                            rows["dropped"][r] = True
                        rows["terminated"][-1] = True  # the episode ends here either way
                        stats.dropped_episodes += 1
                    if dropped[i] or result.done[i]:
                        active[i] = False
                    self.obs[i] = result.obs[i]
                    if len(records) == 1:
                        stats.sample = (records[0].obs, out.texts[j])
                stats.episodes.extend(result.episodes)
                stats.steps += len(idx)
                _count_failures(stats, [result.infos[i] for i in idx])
                if progress is not None:
                    progress(min(stats.steps, budget), budget)
            round_index += 1
        self.rounds += round_index
        stats.seconds = time.perf_counter() - start
        stats.env_restarts = int(getattr(self.pool, "restarts", 0))
        return self._rollout(rows, records, logprobs, ref_logprobs if keep_ref else None, masks,
                             action_masks if spans else None), stats

    @staticmethod
    def _rollout(rows: dict[str, list[Any]], records: list[StepRecord], logprobs: list[torch.Tensor],
                 ref_logprobs: list[torch.Tensor] | None, masks: list[torch.Tensor],
                 action_masks: list[torch.Tensor] | None) -> Rollout:
        R = max(int(m.shape[0]) for m in masks)

        def stack(xs: list[torch.Tensor], value: float = 0.0) -> torch.Tensor:  # [S, R]
            return torch.stack([torch.nn.functional.pad(x.float(), (0, R - x.shape[0]), value=value) for x in xs])

        def column(name: str, dtype: torch.dtype) -> torch.Tensor:  # [S, 1]
            return torch.tensor(rows[name], dtype=dtype).unsqueeze(1)

        values = column("value", torch.float32)
        valid = ~column("dropped", torch.bool)
        return Rollout(
            rewards=column("reward", torch.float32), terminated=column("terminated", torch.bool),
            truncated=column("truncated", torch.bool), values=values, next_values=torch.zeros_like(values),
            old_logprobs=stack(logprobs), response_mask=stack(masks).bool(), steps=records,
            ref_logprobs=stack(ref_logprobs) if ref_logprobs is not None else None,
            action_mask=stack(action_masks).bool() if action_masks is not None else None,
            valid=None if bool(valid.all()) else valid,
            episode_ids=column("episode", torch.long), group_ids=column("group", torch.long),
        )
