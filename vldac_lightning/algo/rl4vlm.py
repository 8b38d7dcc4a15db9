"""RL4VLM: PPO with one ratio per env step on a λ-weighted log-prob (docs/algorithm.md#rl4vlm).

Zhai et al., "Fine-Tuning Large Vision-Language Models as Decision-Making Agents via Reinforcement
Learning", NeurIPS 2024, arXiv:2405.10292.

The step's log-prob is ``λ · log π(thought tokens) + log π(action tokens)``, the action span starting
at the ``"action":`` key (models/spans.py: found from the tokenizer's character offsets). In
``action_only`` mode there are no thoughts: every token is an action token and λ changes nothing.

The paper's fairness add-ons are switches, so its Fig. 4 ladder (RL4VLM → +KL → +warm-up →
+stop-grad → token level = VL-DAC; docs/algorithm.md#ablation-ladder) is one multirun (conf/ladder/): ``kl_beta``, ``warmup_updates``,
``value_stop_grad`` (false: the value loss also trains the backbone's LoRA, as in RL4VLM) and
``ratio_level`` (``token``: VL-DAC's per-token ratios — then the loss *is* VL-DAC's).
"""

from __future__ import annotations

from typing import Any

import torch

from vldac_lightning.algo.base import RolloutNeeds
from vldac_lightning.algo.losses import LossStats, k3_kl, rl4vlm_step_logprob, step_policy_loss, value_loss
from vldac_lightning.algo.vldac import VLDAC
from vldac_lightning.rollout.buffer import Minibatch

__all__ = ["RL4VLM"]

RATIO_LEVELS = ("step", "token")


class RL4VLM(VLDAC):
    """RL4VLM's step-level PPO with GAE and a value head, sharing VL-DAC's rollout and critic."""

    name = "rl4vlm"

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.thought_lambda = float(cfg["thought_lambda"])
        self.ratio_level = str(cfg["ratio_level"])
        self.value_stop_grad = bool(cfg["value_stop_grad"])

    @classmethod
    def validate_keys(cls, cfg: Any) -> None:
        from vldac_lightning.utils.config import ConfigError, _choice, _number

        super().validate_keys(cfg)
        _number(cfg, "algo.thought_lambda", lo=0, hi=1)
        _choice(cfg, "algo.ratio_level", RATIO_LEVELS)
        if not isinstance(cfg.algo.get("value_stop_grad"), bool):
            raise ConfigError(f"algo.value_stop_grad={cfg.algo.get('value_stop_grad')!r} must be true or false")

    def needs(self) -> RolloutNeeds:
        base = super().needs()
        return RolloutNeeds(ref_logprobs=base.ref_logprobs, action_spans=self.ratio_level == "step")

    def loss(self, mb: Minibatch, logprobs: torch.Tensor, values: torch.Tensor | None, *,
             policy_frozen: bool) -> tuple[torch.Tensor, LossStats]:
        if self.ratio_level == "token":
            return super().loss(mb, logprobs, values, policy_frozen=policy_frozen)
        assert values is not None and mb.returns is not None and mb.action_mask is not None
        mask = mb.response_mask.bool()
        keep = torch.ones_like(mb.advantages, dtype=torch.bool) if mb.valid is None else mb.valid.bool()  # [B]
        mask = mask & keep[:, None]
        l_value = value_loss(values, mb.returns, old_values=mb.old_values, clip_eps=self.value_clip_eps,
                             step_mask=mb.valid)
        ref = mb.ref_logprobs if mb.ref_logprobs is not None else mb.old_logprobs
        with torch.set_grad_enabled(torch.is_grad_enabled() and not policy_frozen):
            new = rl4vlm_step_logprob(logprobs, mask, mb.action_mask, self.thought_lambda)  # [B]
            old = rl4vlm_step_logprob(mb.old_logprobs, mask, mb.action_mask, self.thought_lambda)  # [B]
            if keep.any():
                l_policy, stats = step_policy_loss(new[keep], old[keep], mb.advantages[keep], self.clip_eps)
            else:  # every step dropped: nothing to learn, but keep the graph
                l_policy, stats = step_policy_loss(new[:1] * 0, new[:1].detach() * 0, mb.advantages[:1] * 0,
                                                   self.clip_eps)
            l_kl = k3_kl(logprobs, ref, mask)
        if policy_frozen:
            loss = self.value_coef * l_value
        else:
            loss = l_policy + self.kl_beta * l_kl + self.value_coef * l_value
        return loss, LossStats(policy_loss=l_policy.detach(), value_loss=l_value.detach(), kl=l_kl.detach(),
                               clip_fraction=stats.clip_fraction, approx_kl=stats.approx_kl, entropy=None)
