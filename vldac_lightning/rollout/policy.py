"""What a rollout needs from a policy: the contract the collectors are written against.

The collectors (``collector.py``, ``episodes.py``) and the evaluation loop depend on this
protocol, not on the model code: ``VLMPolicy`` (models/policy.py) implements it, and so can a test
double or a policy served from elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch


@dataclass
class ActOutput:
    """Everything a rollout keeps from one batched policy step (B = number of envs)."""

    texts: list[str]  # B decoded responses (what the envs receive)
    response_ids: torch.Tensor  # [B, R] int64, padded after the end token
    response_mask: torch.Tensor  # [B, R] bool, True on every generated token up to and incl. the end token
    logprobs: torch.Tensor  # [B, R] float32, log π_old
    ref_logprobs: torch.Tensor  # [B, R] float32, log π_ref (adapter disabled) or π_old
    values: torch.Tensor  # [B] float32, V(s_t)
    # Per-observation model inputs (unpadded, on CPU) for re-scoring without the processor; None
    # when the processor's outputs cannot be split per observation.
    encodings: list[dict[str, torch.Tensor]] | None = None


@runtime_checkable
class RolloutPolicy(Protocol):
    """A batched policy over language-env observations (``{"images": uint8 [n, H, W, 3], "text": str}``)."""

    def act(self, observations: Sequence[dict[str, Any]], *, do_sample: bool = True,
            with_scores: bool = True) -> ActOutput:
        """One step for every observation: texts for the envs, tokens, log-probs, values."""
        ...

    def value(self, observations: Sequence[dict[str, Any]]) -> torch.Tensor:
        """V(s) ``[B]``, to bootstrap truncated episodes."""
        ...

    def action_mask(self, response_ids: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
        """``[B, R]`` bool: the tokens of the action span (RL4VLM's per-step ratio)."""
        ...

    def set_action_names(self, action_names: Sequence[str]) -> None:
        """The env's fixed action strings (``action_only`` decoding is constrained to them)."""
        ...

    def eval(self) -> Any:
        """Acting mode (no dropout)."""
        ...
