"""RL algorithm maths: advantages and losses for VL-DAC and its baselines (docs/algorithm.md)."""

from vldac_lightning.algo.advantages import compute_gae, explained_variance, loo_advantages, standardize
from vldac_lightning.algo.losses import (
    LossStats,
    PolicyStats,
    k3_kl,
    masked_step_mean,
    rl4vlm_step_logprob,
    step_policy_loss,
    token_policy_loss,
    value_loss,
    vldac_loss,
)

__all__ = [
    "LossStats",
    "PolicyStats",
    "compute_gae",
    "explained_variance",
    "k3_kl",
    "loo_advantages",
    "masked_step_mean",
    "rl4vlm_step_logprob",
    "standardize",
    "step_policy_loss",
    "token_policy_loss",
    "value_loss",
    "vldac_loss",
]
