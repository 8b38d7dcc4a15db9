"""Typed, model-agnostic containers for one rollout and its PPO minibatches.

A rollout is T env steps in each of N parallel envs.  Per-step scalars are stored time-major,
``[T, N]``, which is what GAE walks backwards over.  Everything the update consumes per step -
the model's own record of the step (prompt inputs, response ids; opaque here), the per-token
log-probs - is stored *flattened* over the T·N steps, row-major: env step ``(t, n)`` is flat
index ``t * N + n``, the same order ``torch.reshape`` gives, so ``rollout.flat("values")[i]``
and ``rollout.steps[i]`` always describe the same step.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

__all__ = ["Minibatch", "Rollout"]

# [T, N] fields, the ones ``Rollout.flat`` can flatten.
_TIME_MAJOR_FIELDS = ("rewards", "terminated", "truncated", "values", "next_values", "valid", "episode_ids",
                      "group_ids")


class Minibatch(NamedTuple):
    """One PPO minibatch: B env steps drawn from the rollout, everything gathered.

    B = ``batch_size``; R = the rollout's max response length.
    """

    indices: torch.Tensor  # [B] long, flat env-step indices t * N + n
    steps: list[Any]  # [B] the opaque per-step model records, in ``indices`` order
    old_logprobs: torch.Tensor  # [B, R] log π_old per response token
    ref_logprobs: torch.Tensor | None  # [B, R] log π_ref per response token
    response_mask: torch.Tensor  # [B, R] 1 on real response tokens
    action_mask: torch.Tensor | None  # [B, R] 1 on the action span (RL4VLM)
    old_values: torch.Tensor  # [B] V_old(s_t), for the clipped value loss and diagnostics
    advantages: torch.Tensor  # [B] Â_t
    returns: torch.Tensor | None  # [B] R̂_t; None without a critic
    valid: torch.Tensor | None = None  # [B] bool, False on steps dropped with a failed env worker

    def to(self, device: torch.device | str) -> Minibatch:
        """The same minibatch with every tensor on ``device`` (the step records stay as they are)."""
        return self._replace(**{name: value.to(device) for name, value in self._asdict().items()
                                if isinstance(value, torch.Tensor)})


@dataclass
class Rollout:
    """T env steps × N envs of experience, collected with π_old and V_old."""

    rewards: torch.Tensor  # [T, N] r_t, env reward incl. wrapper penalties
    terminated: torch.Tensor  # [T, N] bool, the MDP ended at step t
    truncated: torch.Tensor  # [T, N] bool, a time limit cut the episode at step t
    values: torch.Tensor  # [T, N] V_old(s_t)
    next_values: torch.Tensor  # [T, N] V_old(s_{t+1}) of the same episode (see compute_gae)
    old_logprobs: torch.Tensor  # [T*N, R] log π_old per response token, padded to R
    response_mask: torch.Tensor  # [T*N, R] 1 on real response tokens (the first one included)
    steps: list[Any]  # [T*N] opaque per-step model records, index t * N + n
    ref_logprobs: torch.Tensor | None = None  # [T*N, R] log π_ref; None when KL uses π_old or β = 0
    action_mask: torch.Tensor | None = None  # [T*N, R] action span, only the RL4VLM baseline needs it
    valid: torch.Tensor | None = None  # [T, N] bool, False on steps of episodes lost to a worker crash
    # Grouped whole-episode rollouts (rollout/episodes.py) only: which episode / task group each step
    # belongs to (-1 on steps of dropped episodes).
    episode_ids: torch.Tensor | None = None  # [T, N] long
    group_ids: torch.Tensor | None = None  # [T, N] long

    def __post_init__(self) -> None:
        shape = tuple(self.rewards.shape)
        if len(shape) != 2:
            raise ValueError(f"Rollout.rewards must be [T, N], got {shape}")
        for name in _TIME_MAJOR_FIELDS:
            if getattr(self, name) is None:
                continue
            if tuple(getattr(self, name).shape) != shape:
                raise ValueError(
                    f"Rollout.{name} has shape {tuple(getattr(self, name).shape)}, expected {shape}"
                )
        num_steps = shape[0] * shape[1]
        if len(self.steps) != num_steps:
            raise ValueError(f"Rollout.steps has {len(self.steps)} records, expected T*N = {num_steps}")
        token_shape = tuple(self.old_logprobs.shape)
        if len(token_shape) != 2 or token_shape[0] != num_steps:
            raise ValueError(f"Rollout.old_logprobs must be [T*N, R] = [{num_steps}, R], got {token_shape}")
        for name in ("response_mask", "ref_logprobs", "action_mask"):
            tensor = getattr(self, name)
            if tensor is not None and tuple(tensor.shape) != token_shape:
                raise ValueError(f"Rollout.{name} has shape {tuple(tensor.shape)}, expected {token_shape}")

    @property
    def num_steps(self) -> int:
        """T·N, the number of env steps (= policy samples) in the rollout."""
        return self.rewards.numel()

    def flat(self, name: str) -> torch.Tensor:  # [T, N] -> [T*N]
        """A ``[T, N]`` field flattened row-major, so that entry ``t * N + n`` is step (t, n)."""
        if name not in _TIME_MAJOR_FIELDS:
            raise ValueError(
                f"Rollout.flat: {name!r} is not a [T, N] field; choose from {_TIME_MAJOR_FIELDS}"
            )
        return getattr(self, name).reshape(-1)

    def minibatches(
        self,
        advantages: torch.Tensor,  # [T*N] (or [T, N], flattened row-major) Â_t
        returns: torch.Tensor | None,  # [T*N] (or [T, N]) R̂_t; None without a critic
        batch_size: int,
        generator: torch.Generator,
        *,
        num_minibatches: int | None = None,
    ) -> Iterator[Minibatch]:
        """One epoch: every env step exactly once, in a random order drawn from ``generator``.

        Call once per PPO epoch.  The permutation comes only from ``generator``, so the same seed
        gives the same minibatches.  ``batch_size`` must divide T·N: a ragged last minibatch
        would weigh its few steps more than the rest.  Whole-episode rollouts have a varying
        number of steps; for them ``num_minibatches`` splits the permutation into that many
        near-equal minibatches instead (sizes differ by at most one; empty ones when there are
        fewer steps than minibatches), so every iteration takes the same number of optimizer steps.
        """
        num_steps = self.num_steps
        if num_minibatches is not None:
            if num_minibatches < 1:
                raise ValueError(f"num_minibatches must be >= 1, got {num_minibatches}")
        elif batch_size <= 0 or num_steps % batch_size != 0:
            divisors = [d for d in range(1, num_steps + 1) if num_steps % d == 0]
            raise ValueError(
                f"rollout of {num_steps} steps is not divisible by minibatch size {batch_size}; "
                f"pick one of {divisors} (or change the rollout length / number of envs)"
            )
        advantages = advantages.reshape(-1)
        returns = returns.reshape(-1) if returns is not None else None
        for name, tensor in (("advantages", advantages), ("returns", returns)):
            if tensor is not None and tensor.numel() != num_steps:
                raise ValueError(
                    f"Rollout.minibatches: {name} has {tensor.numel()} entries, expected {num_steps}"
                )
        old_values = self.flat("values")
        valid = self.flat("valid") if self.valid is not None else None

        def gather(tensor: torch.Tensor | None, index: torch.Tensor) -> torch.Tensor | None:
            return None if tensor is None else tensor[index.to(tensor.device)]

        permutation = torch.randperm(num_steps, generator=generator)  # [T*N]
        if num_minibatches is not None:
            chunks = list(torch.tensor_split(permutation, num_minibatches))
        else:
            chunks = [permutation[start : start + batch_size] for start in range(0, num_steps, batch_size)]
        for index in chunks:  # [B]
            yield Minibatch(
                indices=index,
                steps=[self.steps[i] for i in index.tolist()],
                old_logprobs=gather(self.old_logprobs, index),
                ref_logprobs=gather(self.ref_logprobs, index),
                response_mask=gather(self.response_mask, index),
                action_mask=gather(self.action_mask, index),
                old_values=gather(old_values, index),
                advantages=gather(advantages, index),
                returns=gather(returns, index),
                valid=gather(valid, index),
            )
