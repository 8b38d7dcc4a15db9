"""VL-DAC losses (docs/algorithm.md#total-loss) and the RL4VLM step-level baseline (docs/algorithm.md#rl4vlm).

Shapes: ``B`` env steps in the minibatch, ``T`` padded response length.  ``mask`` is 1 on every
real response token - including the first one (the reference code dropped it, an off-by-one we do
not reproduce) - and 0 on padding.  Padded positions may hold garbage (even ±inf); every function
here masks *before* exponentiating so that garbage can reach neither the loss nor the gradient.

Reductions follow the paper: per-token quantities are averaged over a step's own tokens
(1/T_t Σ_i), then over the steps of the minibatch, so long responses do not outweigh short ones.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = [
    "LossStats",
    "PolicyStats",
    "k3_kl",
    "masked_step_mean",
    "rl4vlm_step_logprob",
    "step_policy_loss",
    "token_policy_loss",
    "value_loss",
    "vldac_loss",
]


class PolicyStats(NamedTuple):
    """Diagnostics of a clipped policy loss (detached 0-dim tensors)."""

    clip_fraction: torch.Tensor  # [] fraction of ratios with |r − 1| > ε
    approx_kl: torch.Tensor  # [] mean of (r − 1) − log r, the k3 estimate of KL(π_old ‖ π_θ)


class LossStats(NamedTuple):
    """Everything ``vldac_loss`` reports for logging (detached 0-dim tensors)."""

    policy_loss: torch.Tensor  # [] L_π
    value_loss: torch.Tensor | None  # [] L_V (unweighted); None without a critic
    kl: torch.Tensor  # [] L_KL (unweighted), k3 KL to the reference policy
    clip_fraction: torch.Tensor  # []
    approx_kl: torch.Tensor  # [] KL(π_old ‖ π_θ) estimate, how far this update has moved
    entropy: torch.Tensor | None  # [] mean per-token entropy, None when not supplied


def masked_step_mean(
    x: torch.Tensor,  # [B, T] per-token quantity
    mask: torch.Tensor,  # [B, T] 1 on real tokens
) -> torch.Tensor:  # []
    """Mean over each step's real tokens, then mean over steps: ``mean_t (1/T_t) Σ_i x_{t,i}``.

    Steps with no real token (T_t = 0) are left out of the outer mean instead of dividing by
    zero.  If no step has a token the result is a 0 that still belongs to ``x``'s graph.
    """
    mask = mask.bool()
    x = torch.where(mask, x, torch.zeros_like(x))  # garbage on padding must not reach the sum
    token_counts = mask.sum(dim=-1)  # [B] T_t
    has_tokens = token_counts > 0  # [B]
    if not has_tokens.any():
        return x.sum() * 0.0
    per_step = x.sum(dim=-1)[has_tokens] / token_counts[has_tokens].to(x.dtype)  # [B'] (1/T_t) Σ_i
    return per_step.mean()


def _clipped_surrogate(
    log_ratio: torch.Tensor,  # [...] log π_θ − log π_old (already finite everywhere)
    advantages: torch.Tensor,  # [...] broadcastable to log_ratio
    clip_eps: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's pessimistic objective, negated: ``−min(r·A, clip(r, 1−ε, 1+ε)·A)``; also returns r."""
    ratio = torch.exp(log_ratio)
    pg_unclipped = -advantages * ratio
    pg_clipped = -advantages * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    # −min(a, b) = max(−a, −b): take the worse (for the policy) of the two bounds.
    return torch.max(pg_unclipped, pg_clipped), ratio


def _policy_stats(
    log_ratio: torch.Tensor,  # [...] finite
    ratio: torch.Tensor,  # [...] exp(log_ratio)
    clip_eps: float,
) -> PolicyStats:
    """Means over the given elements (the caller selects real tokens/steps)."""
    with torch.no_grad():
        clip_fraction = ((ratio - 1.0).abs() > clip_eps).to(ratio.dtype).mean()
        # k3 estimator of KL(π_old ‖ π_θ) from samples of π_old: (r − 1) − log r ≥ 0.
        approx_kl = ((ratio - 1.0) - log_ratio).mean()
    return PolicyStats(clip_fraction=clip_fraction, approx_kl=approx_kl)


def token_policy_loss(
    logprobs: torch.Tensor,  # [B, T] log π_θ(a_t^i | s_t, a_t^{<i})
    old_logprobs: torch.Tensor,  # [B, T] log π_old, from the rollout
    advantages: torch.Tensor,  # [B] Â_t, one per env step, shared by all its tokens
    mask: torch.Tensor,  # [B, T] 1 on real response tokens
    clip_eps: float,
) -> tuple[torch.Tensor, PolicyStats]:
    """VL-DAC's token-level clipped policy loss (docs/algorithm.md#policy-loss)::

        L_π = − mean_t (1/T_t) Σ_i min(r_{t,i} Â_t, clip(r_{t,i}, 1−ε, 1+ε) Â_t)

    Each token gets its own ratio and is clipped on its own; the step's advantage is broadcast to
    all its tokens.  Stats are means over all real tokens of the minibatch.
    """
    mask = mask.bool()
    # Mask the log-ratio, not the loss: exp() of garbage on padding could be inf, and inf·0 = NaN
    # in the backward pass even behind a torch.where on the output.
    log_ratio = torch.where(mask, logprobs - old_logprobs, torch.zeros_like(logprobs))  # [B, T]
    pg_losses, ratio = _clipped_surrogate(log_ratio, advantages.unsqueeze(-1), clip_eps)  # [B, T]
    loss = masked_step_mean(pg_losses, mask)
    return loss, _policy_stats(log_ratio[mask], ratio[mask], clip_eps)


def k3_kl(
    logprobs: torch.Tensor,  # [B, T] log π_θ
    ref_logprobs: torch.Tensor,  # [B, T] log π_ref (adapter disabled, or π_old)
    mask: torch.Tensor,  # [B, T] 1 on real response tokens
) -> torch.Tensor:  # []
    """k3 estimate of KL(π_θ ‖ π_ref) on tokens sampled from π_θ (docs/algorithm.md#kl-penalty)::

        kl_{t,i} = exp(Δ) − Δ − 1,  Δ = log π_ref − log π_θ;   L_KL = mean_t (1/T_t) Σ_i kl_{t,i}

    Non-negative for every token, unbiased, low variance.  Gradient flows through ``logprobs``:
    ∂kl/∂log π_θ = 1 − exp(Δ), which pushes log π_θ towards log π_ref.
    """
    mask = mask.bool()
    delta = torch.where(mask, ref_logprobs - logprobs, torch.zeros_like(logprobs))  # [B, T] Δ
    kl = torch.exp(delta) - delta - 1.0  # [B, T]
    return masked_step_mean(kl, mask)


def value_loss(
    values: torch.Tensor,  # [B] V_φ(s_t), current head
    returns: torch.Tensor,  # [B] R̂_t = Â_t + V_old(s_t)
    old_values: torch.Tensor | None = None,  # [B] V_old(s_t) from the rollout
    clip_eps: float | None = None,
    step_mask: torch.Tensor | None = None,  # [B] bool, steps that count (None: all)
) -> torch.Tensor:  # []
    """``½ mean_t (V − R̂)²`` (docs/algorithm.md#value-loss).

    With ``clip_eps`` the PPO-style clipped variant: the new value may move at most ``clip_eps``
    from the rollout's value before the loss stops rewarding it, and the worse of the two errors
    counts: ``½ mean max((V − R̂)², (V_old + clip(V − V_old, −c, c) − R̂)²)``. ``step_mask`` leaves
    steps out of the mean (episodes lost to a crashed env worker); none left gives a graph-attached 0.
    """
    if step_mask is not None:
        # Replace dropped steps *before* any arithmetic: a garbage value (inf/NaN) would otherwise
        # turn into a NaN gradient even behind a torch.where.
        step_mask = step_mask.bool()
        values = torch.where(step_mask, values, returns.detach())
        if old_values is not None:
            old_values = torch.where(step_mask, old_values, returns.detach())
    err = (values - returns) ** 2  # [B], 0 on dropped steps
    if clip_eps is not None:
        if old_values is None:
            raise ValueError("value_loss: the clipped variant (clip_eps given) needs old_values")
        values_clipped = old_values + torch.clamp(values - old_values, -clip_eps, clip_eps)  # [B]
        err = torch.max(err, (values_clipped - returns) ** 2)
    if step_mask is None:
        return 0.5 * err.mean()
    return 0.5 * err.sum() / step_mask.sum().clamp(min=1)


def rl4vlm_step_logprob(
    token_logprobs: torch.Tensor,  # [B, T] log π of each response token
    mask: torch.Tensor,  # [B, T] 1 on real response tokens
    action_mask: torch.Tensor,  # [B, T] 1 on the action span (from the `"action":` key on)
    lam: float,
) -> torch.Tensor:  # [B]
    """RL4VLM's step log-prob: ``λ · Σ log π(thought tokens) + Σ log π(action tokens)`` (docs/algorithm.md#rl4vlm).

    Thought tokens are the real tokens outside the action span (``mask & ~action_mask``).
    λ < 1 down-weights the long chain of thought so that it does not dominate the step's ratio.
    """
    mask = mask.bool()
    action = mask & action_mask.bool()  # [B, T]
    thought = mask & ~action_mask.bool()  # [B, T]
    zeros = torch.zeros_like(token_logprobs)
    thought_logprob = torch.where(thought, token_logprobs, zeros).sum(dim=-1)  # [B]
    action_logprob = torch.where(action, token_logprobs, zeros).sum(dim=-1)  # [B]
    return lam * thought_logprob + action_logprob


def step_policy_loss(
    step_logprobs: torch.Tensor,  # [B] log π_θ of the whole step (e.g. rl4vlm_step_logprob)
    old_step_logprobs: torch.Tensor,  # [B] same quantity under π_old
    advantages: torch.Tensor,  # [B] Â_t
    clip_eps: float,
) -> tuple[torch.Tensor, PolicyStats]:
    """Step-level clipped policy loss, one ratio per env step (RL4VLM)::

        L_π = − mean_t min(r_t Â_t, clip(r_t, 1−ε, 1+ε) Â_t)

    with ``r_t = exp(log π_θ(a_t) − log π_old(a_t))`` for the whole step's (λ-weighted) log-prob.
    """
    log_ratio = step_logprobs - old_step_logprobs  # [B]
    pg_losses, ratio = _clipped_surrogate(log_ratio, advantages, clip_eps)  # [B]
    return pg_losses.mean(), _policy_stats(log_ratio, ratio, clip_eps)


def vldac_loss(
    logprobs: torch.Tensor,  # [B, T] log π_θ, with grad
    old_logprobs: torch.Tensor,  # [B, T] log π_old, rollout
    ref_logprobs: torch.Tensor,  # [B, T] log π_ref
    mask: torch.Tensor,  # [B, T] 1 on real response tokens
    advantages: torch.Tensor,  # [B] standardised Â_t
    values: torch.Tensor,  # [B] V_φ(s_t), with grad into the value head only
    returns: torch.Tensor,  # [B] R̂_t
    *,
    clip_eps: float,
    kl_beta: float,
    value_coef: float,
    policy_frozen: bool,
    old_values: torch.Tensor | None = None,  # [B] V_old(s_t), for the clipped value loss
    value_clip_eps: float | None = None,
    entropy: torch.Tensor | None = None,  # [B, T] per-token entropy of π_θ
    entropy_coef: float = 0.0,
    step_mask: torch.Tensor | None = None,  # [B] bool, steps that count (None: all)
) -> tuple[torch.Tensor, LossStats]:
    """Total VL-DAC objective ``L = L_π + β·L_KL + α·L_V`` (docs/algorithm.md#total-loss).

    During the value warm-up (``policy_frozen``) only the critic learns: the loss is ``α·L_V`` and
    the policy/KL terms are still computed, under ``torch.no_grad``, for logging only - so no
    gradient can reach the policy through them.

    The optional entropy bonus ``−entropy_coef · H`` defaults to off (the paper has none).
    ``step_mask`` drops whole steps from every term (their tokens leave the token mask).
    """
    if entropy_coef != 0.0 and entropy is None:
        raise ValueError("vldac_loss: entropy_coef != 0 needs the per-token entropy")
    if step_mask is not None:
        mask = mask.bool() & step_mask.bool()[:, None]

    l_value = value_loss(values, returns, old_values=old_values, clip_eps=value_clip_eps, step_mask=step_mask)
    with torch.set_grad_enabled(torch.is_grad_enabled() and not policy_frozen):
        l_policy, policy_stats = token_policy_loss(logprobs, old_logprobs, advantages, mask, clip_eps)
        l_kl = k3_kl(logprobs, ref_logprobs, mask)
        l_entropy = masked_step_mean(entropy, mask) if entropy is not None else None

    if policy_frozen:
        loss = value_coef * l_value
    else:
        loss = l_policy + kl_beta * l_kl + value_coef * l_value
        if l_entropy is not None and entropy_coef != 0.0:
            loss = loss - entropy_coef * l_entropy  # maximise entropy

    stats = LossStats(
        policy_loss=l_policy.detach(),
        value_loss=l_value.detach(),
        kl=l_kl.detach(),
        clip_fraction=policy_stats.clip_fraction,
        approx_kl=policy_stats.approx_kl,
        entropy=l_entropy.detach() if l_entropy is not None else None,
    )
    return loss, stats
