"""RL4VLM: the action span from a real tokenizer's character offsets, the λ-weighted step log-prob,
and its loss (hand-computed); at token level it is VL-DAC's loss exactly."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch

from vldac_lightning.algo.losses import k3_kl, value_loss
from vldac_lightning.algo.rl4vlm import RL4VLM
from vldac_lightning.algo.vldac import VLDAC
from vldac_lightning.rollout.buffer import Minibatch

CFG = {"clip_eps": 0.1, "kl_beta": 0.05, "kl_reference": "base", "warmup_updates": 0, "gamma": 0.9,
       "gae_lambda": 0.95, "value_coef": 0.15, "value_clip_eps": None, "normalize_advantages": True,
       "thought_lambda": 0.5, "ratio_level": "step", "value_stop_grad": True}
RESPONSE = '{"thoughts": "move closer to the target", "action": "+"}'


def test_action_span_is_found_from_the_tokenizers_offsets(make_policy: Callable[..., Any]) -> None:
    policy = make_policy(response_mode="json")
    tok = policy.processor.tokenizer
    ids = torch.tensor([tok.encode(RESPONSE, add_special_tokens=False) + [policy.eos_token_id]])
    mask = torch.ones_like(ids, dtype=torch.bool)
    action = policy.action_mask(ids, mask)[0]
    # The split is where the text says, whatever the tokenizer made of it: the action span starts with
    # the token holding the opening quote of "action" (this tokenizer: ' "') and ends with the end token.
    thought_text = tok.decode(ids[0][~action].tolist())
    action_text = tok.decode(ids[0][action].tolist())
    assert thought_text == '{"thoughts": "move closer to the target",'
    assert action_text == ' "action": "+"}' + tok.decode([policy.eos_token_id])
    assert not action[: int((~action).sum())].any()  # one contiguous tail
    # Padding is never an action token; action_only responses are all action (no thoughts to weigh).
    padded = torch.cat([ids, torch.full((1, 2), policy.pad_token_id)], 1)
    padded_mask = torch.cat([mask, torch.zeros(1, 2, dtype=torch.bool)], 1)
    assert not policy.action_mask(padded, padded_mask)[0, -2:].any()
    only = make_policy(response_mode="action_only")
    assert torch.equal(only.action_mask(padded, padded_mask), padded_mask)


def test_a_response_without_an_action_key_counts_as_action(make_policy: Callable[..., Any]) -> None:
    policy = make_policy(response_mode="json")
    tok = policy.processor.tokenizer
    ids = torch.tensor([tok.encode("I do not know", add_special_tokens=False)])
    mask = torch.ones_like(ids, dtype=torch.bool)
    assert policy.action_mask(ids, mask).all()


def test_lambda_weighted_step_logprob_of_a_real_response(make_policy: Callable[..., Any]) -> None:
    """Thought tokens log-prob −1 each, action tokens −0.5 each; this tokenizer gives 11 thought tokens
    ('{"', 'thoughts', '":', ' "', 'mo', 've', ' closer', ' to', ' the', ' target', '",') and 5 action
    tokens (' "', 'action', '":', ' "+"}', end).  λ = 0.5: 0.5·(11·−1) + 5·−0.5 = −5.5 − 2.5 = −8."""
    from vldac_lightning.algo.losses import rl4vlm_step_logprob

    policy = make_policy(response_mode="json")
    tok = policy.processor.tokenizer
    ids = torch.tensor([tok.encode(RESPONSE, add_special_tokens=False) + [policy.eos_token_id]])
    mask = torch.ones_like(ids, dtype=torch.bool)
    action = policy.action_mask(ids, mask)
    assert (int((~action).sum()), int(action.sum())) == (11, 5)
    logprobs = torch.where(action, torch.tensor(-0.5), torch.tensor(-1.0))
    assert rl4vlm_step_logprob(logprobs, mask, action, 0.5).item() == pytest.approx(-8.0)
    assert rl4vlm_step_logprob(logprobs, mask, action, 1.0).item() == pytest.approx(-13.5)  # plain sum


def minibatch(**overrides: Any) -> Minibatch:
    """2 steps, 3 token slots.  step 0: thought, action, action;  step 1: thought, action, pad."""
    fields: dict[str, Any] = dict(
        indices=torch.tensor([0, 1]), steps=[None, None],
        old_logprobs=torch.zeros(2, 3), ref_logprobs=torch.zeros(2, 3),
        response_mask=torch.tensor([[1, 1, 1], [1, 1, 0]]).bool(),
        action_mask=torch.tensor([[0, 1, 1], [0, 1, 0]]).bool(),
        old_values=torch.zeros(2), advantages=torch.tensor([1.0, -1.0]), returns=torch.tensor([1.0, 0.0]),
        valid=None,
    )
    fields.update(overrides)
    return Minibatch(**fields)


def test_rl4vlm_step_loss_by_hand() -> None:
    """λ = 0.5, ε = 0.1, β = 0.05, α = 0.15; old log-probs 0, so log-ratios are the new log-probs.

    step 0: new log-probs [0.1 (thought), 0.02, 0.02] → log r = 0.5·0.1 + 0.04 = 0.09, r = e^0.09 = 1.094174
            Â = +1: min(1.094174, 1.1) = 1.094174 (inside the clip range)     pg = −1.094174
    step 1: new log-probs [−0.4 (thought), 0.0] → log r = 0.5·−0.4 = −0.2, r = e^−0.2 = 0.818731
            Â = −1: min(−0.818731, −0.9) = −0.9 (clipped)                          pg = 0.9
    L_π = (−1.094174 + 0.9)/2 = −0.097087
    L_KL: per token e^Δ − Δ − 1 with Δ = 0 − logp, step means, then the mean over steps;
    L_V = ½·((0.5 − 1)² + (0.5 − 0)²)/2 = 0.125 with V = 0.5 on both steps.
    """
    mb = minibatch()
    logprobs = torch.tensor([[0.1, 0.02, 0.02], [-0.4, 0.0, 0.0]], requires_grad=True)
    values = torch.tensor([0.5, 0.5], requires_grad=True)
    loss, stats = RL4VLM(CFG).loss(mb, logprobs, values, policy_frozen=False)
    l_pi = (-math.exp(0.09) + 0.9) / 2
    assert stats.policy_loss.item() == pytest.approx(l_pi, rel=1e-6)
    assert stats.policy_loss.item() == pytest.approx(-0.097087, abs=1e-6)
    kl = lambda d: math.exp(d) - d - 1  # noqa: E731
    l_kl = ((kl(-0.1) + 2 * kl(-0.02)) / 3 + (kl(0.4) + kl(0.0)) / 2) / 2
    assert stats.kl.item() == pytest.approx(l_kl, rel=1e-5)
    assert stats.value_loss.item() == pytest.approx(0.125)
    assert loss.item() == pytest.approx(l_pi + 0.05 * l_kl + 0.15 * 0.125, rel=1e-5)
    assert stats.clip_fraction.item() == pytest.approx(0.5)  # one of the two steps' ratios is outside 1 ± ε
    # Warm-up: only α·L_V, and no gradient reaches the log-probs.
    loss, _ = RL4VLM(CFG).loss(mb, logprobs, values, policy_frozen=True)
    assert loss.item() == pytest.approx(0.15 * 0.125)
    loss.backward()
    assert logprobs.grad is None or not logprobs.grad.any()


def test_rl4vlm_drops_invalid_steps_from_every_term() -> None:
    logprobs = torch.tensor([[0.1, 0.02, 0.02], [-0.4, 0.0, 0.0]])
    values = torch.tensor([0.5, 0.5])
    _, both = RL4VLM(CFG).loss(minibatch(), logprobs, values, policy_frozen=False)
    _, first = RL4VLM(CFG).loss(minibatch(valid=torch.tensor([True, False])), logprobs, values, policy_frozen=False)
    # Only step 0 left: L_π = −e^0.09, L_V = ½(0.5 − 1)² = 0.125, L_KL = step 0's mean.
    assert first.policy_loss.item() == pytest.approx(-math.exp(0.09), rel=1e-6)
    assert first.value_loss.item() == pytest.approx(0.125)
    assert first.kl.item() == pytest.approx(k3_kl(logprobs[:1], torch.zeros(1, 3), torch.ones(1, 3)).item())
    assert both.value_loss.item() == pytest.approx(value_loss(values, torch.tensor([1.0, 0.0])).item())


def test_token_level_rl4vlm_is_vldac() -> None:
    mb = minibatch()
    logprobs = torch.tensor([[0.1, 0.02, 0.02], [-0.4, 0.0, 0.0]])
    values = torch.tensor([0.5, 0.5])
    token = RL4VLM({**CFG, "ratio_level": "token"})
    assert not token.needs().action_spans and RL4VLM(CFG).needs().action_spans
    a, sa = token.loss(mb, logprobs, values, policy_frozen=False)
    b, sb = VLDAC(CFG).loss(mb, logprobs, values, policy_frozen=False)
    assert a.item() == b.item() and sa.policy_loss.item() == sb.policy_loss.item()
