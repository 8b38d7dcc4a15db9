"""VL-DAC: token-level PPO with a step-level, stop-grad critic (docs/algorithm.md, from "Policy loss" to "Value warm-up").

Bredis et al., "Enhancing Vision-Language Model Training with Reinforcement Learning in Synthetic
Worlds for Real-World Success", 2025, arXiv:2508.04280.
"""

from __future__ import annotations

from typing import Any

import torch

from vldac_lightning.algo.advantages import compute_gae, standardize
from vldac_lightning.algo.base import Algorithm, Targets
from vldac_lightning.algo.losses import LossStats, vldac_loss
from vldac_lightning.rollout.buffer import Minibatch, Rollout

__all__ = ["VLDAC", "gae_targets"]


def gae_targets(rollout: Rollout, *, gamma: float, lam: float, normalize: bool) -> Targets:
    """GAE over environment steps → (advantages, returns); advantages standardised over the rollout.

    Steps of episodes lost to a crashed env worker (``rollout.valid`` False) stay out of the
    statistics; the loss masks them too.
    """
    adv, ret = compute_gae(rollout.rewards, rollout.values, rollout.next_values, rollout.terminated,
                           rollout.truncated, gamma, lam)
    if normalize:
        adv = standardize(adv, rollout.valid)
    return Targets(advantages=adv, returns=ret)


class VLDAC(Algorithm):
    """``L = L_π + β·L_KL + α·L_V``: per-token clipped ratios sharing the step's GAE advantage, a k3
    KL to the base model, and a value head on the last prompt token's detached hidden state, trained
    alone for the first ``warmup_updates`` iterations."""

    name = "vldac"
    has_critic = True

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.gamma = float(cfg["gamma"])
        self.gae_lambda = float(cfg["gae_lambda"])
        self.value_coef = float(cfg["value_coef"])
        clip = cfg.get("value_clip_eps")
        self.value_clip_eps = None if clip is None else float(clip)
        self.normalize_advantages = bool(cfg["normalize_advantages"])

    @classmethod
    def validate_keys(cls, cfg: Any) -> None:
        from vldac_lightning.utils.config import _get, _number

        _number(cfg, "algo.gamma", lo=0, hi=1)
        _number(cfg, "algo.gae_lambda", lo=0, hi=1)
        _number(cfg, "algo.value_coef", lo=0)
        if cfg.algo.get("value_clip_eps") is not None:
            _number(cfg, "algo.value_clip_eps", lo=0, lo_open=True)
        _get(cfg, "algo.normalize_advantages")

    def targets(self, rollout: Rollout) -> Targets:
        return gae_targets(rollout, gamma=self.gamma, lam=self.gae_lambda, normalize=self.normalize_advantages)

    def loss(self, mb: Minibatch, logprobs: torch.Tensor, values: torch.Tensor | None, *,
             policy_frozen: bool) -> tuple[torch.Tensor, LossStats]:
        assert values is not None and mb.returns is not None
        return vldac_loss(
            logprobs, mb.old_logprobs, mb.ref_logprobs if mb.ref_logprobs is not None else mb.old_logprobs,
            mb.response_mask, mb.advantages, values, mb.returns,
            clip_eps=self.clip_eps, kl_beta=self.kl_beta, value_coef=self.value_coef, policy_frozen=policy_frozen,
            old_values=mb.old_values, value_clip_eps=self.value_clip_eps, step_mask=mb.valid,
        )
