"""Advantage estimation for VL-DAC and its baselines (docs/algorithm.md#advantages-and-returns).

VL-DAC runs GAE over *environment steps*, not over tokens: every response token of step t shares
the one advantage Â_t.  LOOP (critic-free baseline) instead uses a leave-one-out group baseline.

Layout convention: rollout tensors are time-major, ``[T, N]`` = (env steps per env, envs).
"""

from __future__ import annotations

import torch

from vldac_lightning.utils.distributed import global_mean_std, is_distributed

__all__ = ["compute_gae", "explained_variance", "loo_advantages", "standardize"]


@torch.no_grad()
def compute_gae(
    rewards: torch.Tensor,  # [T, N] r_t
    values: torch.Tensor,  # [T, N] V_old(s_t)
    next_values: torch.Tensor,  # [T, N] V_old(s_{t+1}) of the same episode (see below)
    terminated: torch.Tensor,  # [T, N] bool: the MDP ended at step t (no bootstrap)
    truncated: torch.Tensor,  # [T, N] bool: a time limit cut the episode at step t (bootstrap)
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over environment steps.

    ``next_values[t]`` is the value of the state that follows step t *in the same episode*:

    - a step that is not the last of its episode: ``values[t + 1]`` (or, on the last row of the
      rollout, the value of the observation the rollout was cut at);
    - a truncated step: V(final observation), because the episode would have gone on, so the
      target bootstraps from it (the vector env has already reset, so ``values[t + 1]`` belongs
      to the *next* episode and would be wrong here);
    - a terminated step: ignored (may be anything, even NaN) - there is no future after a
      terminal state.

    An episode boundary (terminated or truncated) stops the λ-recursion, so nothing from the next
    episode leaks into this one.  Terminal penalties (e.g. −1 on failure) are ordinary rewards
    here and therefore reach the targets - the reference code masked them out.

    Returns ``(advantages, returns)``, both ``[T, N]``, with ``returns = advantages + values``
    (the value targets R̂).  The result carries no gradient: targets are constants.
    """
    if not (rewards.shape == values.shape == next_values.shape == terminated.shape == truncated.shape):
        raise ValueError(
            "compute_gae expects equal [T, N] shapes, got "
            f"rewards {tuple(rewards.shape)}, values {tuple(values.shape)}, "
            f"next_values {tuple(next_values.shape)}, terminated {tuple(terminated.shape)}, "
            f"truncated {tuple(truncated.shape)}"
        )
    terminated = terminated.bool()
    dones = terminated | truncated.bool()  # [T, N] episode boundary of either kind

    num_steps = rewards.shape[0]
    advantages = torch.zeros_like(rewards)  # [T, N]
    lastgaelam = torch.zeros_like(rewards[0])  # [N] Â_{t+1}; 0 beyond the rollout's last row
    for t in reversed(range(num_steps)):
        # Bootstrap from V(s_{t+1}) unless the episode terminated.  torch.where rather than a
        # multiplication so that a placeholder (NaN/inf) on a terminated step cannot leak in.
        nextnonterminal = ~terminated[t]  # [N]
        next_value = torch.where(nextnonterminal, next_values[t], torch.zeros_like(next_values[t]))
        delta = rewards[t] + gamma * next_value - values[t]  # [N] TD error δ_t
        # Â_t = δ_t + γλ Â_{t+1}, but only while the episode goes on: after a termination *or* a
        # truncation Â_{t+1} belongs to a different episode.
        nextnotdone = (~dones[t]).to(rewards.dtype)  # [N]
        lastgaelam = delta + gamma * lam * nextnotdone * lastgaelam
        advantages[t] = lastgaelam
    returns = advantages + values  # [T, N] R̂_t = Â_t + V_old(s_t)
    return advantages, returns


def standardize(
    x: torch.Tensor,  # any shape
    mask: torch.Tensor | None = None,  # same shape as x; 1/True = entry counts
    eps: float = 1e-8,
) -> torch.Tensor:
    """``(x − mean) / (std + eps)`` over all (masked) entries.

    Uses the *population* std (``unbiased=False``): for a rollout of hundreds of steps the choice
    is immaterial, and with it a single entry gives 0 instead of NaN.  Entries outside ``mask``
    are set to 0 so that they cannot carry stray values into a loss.

    Under DDP the mean and std are those of every rank's entries together (all-reduced), so N ranks
    standardise exactly as one process would on the concatenated rollout.
    """
    if is_distributed():
        sel = x if mask is None else x[mask.bool()]
        mean, std = global_mean_std(sel)
        out = (x - mean) / (std + eps)
        return out if mask is None else torch.where(mask.bool(), out, torch.zeros_like(x))
    if mask is None:
        mean = x.mean()
        std = x.std(unbiased=False)
        return (x - mean) / (std + eps)
    mask = mask.bool()
    if mask.shape != x.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match x shape {tuple(x.shape)}")
    if not mask.any():
        raise ValueError("standardize: mask selects no entries")
    selected = x[mask]
    mean = selected.mean()
    std = selected.std(unbiased=False)
    return torch.where(mask, (x - mean) / (std + eps), torch.zeros_like(x))


def loo_advantages(returns: torch.Tensor) -> torch.Tensor:  # [G, K] -> [G, K]
    """LOOP leave-one-out advantage (Chen et al. 2025; docs/algorithm.md#loop).

    ``returns[g, k]`` is the return of rollout k of task (group) g.  The advantage of a rollout is
    its return minus the mean return of the *other* K−1 rollouts of the same task - an unbiased
    baseline because it does not depend on the rollout itself.  Equivalently
    ``K / (K − 1) · (R_k − mean_g R)``.
    """
    if returns.dim() != 2:
        raise ValueError(f"loo_advantages expects returns of shape [G, K], got {tuple(returns.shape)}")
    num_rollouts = returns.shape[1]
    if num_rollouts < 2:
        raise ValueError(
            f"loo_advantages needs at least K=2 rollouts per group (a leave-one-out baseline), got K={num_rollouts}"
        )
    others_mean = (returns.sum(dim=1, keepdim=True) - returns) / (num_rollouts - 1)  # [G, K]
    return returns - others_mean


@torch.no_grad()
def explained_variance(
    values: torch.Tensor,  # [...] V_old(s_t) predicted before the update
    returns: torch.Tensor,  # [...] R̂_t, same shape
) -> float:
    """``1 − Var[R̂ − V] / Var[R̂]`` - 1 is a perfect critic, 0 is no better than a constant.

    Returns NaN when ``Var[R̂] = 0`` (e.g. every return identical): the ratio is undefined, and a
    NaN in the log is more honest than a made-up 0 or 1 (same convention as cleanrl).
    Population variances; the choice cancels in the ratio. Under DDP: over every rank's entries.
    """
    if is_distributed():
        var_returns = float(global_mean_std(returns)[1]) ** 2
        if var_returns == 0:
            return float("nan")
        return float(1.0 - float(global_mean_std(returns - values)[1]) ** 2 / var_returns)
    var_returns = returns.var(unbiased=False)
    if var_returns == 0:
        return float("nan")
    return float(1.0 - (returns - values).var(unbiased=False) / var_returns)
