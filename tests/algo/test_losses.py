"""Hand-computed checks of the VL-DAC and RL4VLM losses (torchtune-style: numbers in the test)."""

import math

import pytest
import torch

from vldac_lightning.algo import (
    k3_kl,
    rl4vlm_step_logprob,
    step_policy_loss,
    token_policy_loss,
    value_loss,
    vldac_loss,
)

EPS = 0.1
LN2 = math.log(2.0)
GARBAGE = 1e4  # padding value: exp(1e4) = inf, so any leak would show up as inf/NaN


def two_step_example() -> dict[str, torch.Tensor]:
    """2 env steps, 2 and 3 real tokens, padded to T = 3; old log-probs 0 so log-ratio = logprobs.

    step 0: Â = +2, log-ratios [0.2, 0.0, pad]
    step 1: Â = −1, log-ratios [−0.2, 0.05, 0.3]
    """
    return {
        "logprobs": torch.tensor([[0.2, 0.0, GARBAGE], [-0.2, 0.05, 0.3]], requires_grad=True),
        "old_logprobs": torch.tensor([[0.0, 0.0, -GARBAGE], [0.0, 0.0, 0.0]]),
        "advantages": torch.tensor([2.0, -1.0]),
        "mask": torch.tensor([[1, 1, 0], [1, 1, 1]]),
    }


def test_token_policy_loss_by_hand():
    ex = two_step_example()
    loss, stats = token_policy_loss(ex["logprobs"], ex["old_logprobs"], ex["advantages"], ex["mask"], EPS)
    # step 0, Â = 2:
    #   tok 0: r = e^0.2 = 1.2214 -> min(2.4428, 1.1·2 = 2.2) = 2.2  (clipped)   pg = −2.2
    #   tok 1: r = 1              -> min(2, 2) = 2                              pg = −2.0
    #   step mean = −2.1
    # step 1, Â = −1:
    #   tok 0: r = e^−0.2 = 0.8187 -> min(−0.8187, 0.9·−1 = −0.9) = −0.9 (clipped)  pg = 0.9
    #   tok 1: r = e^0.05 = 1.0513 -> inside the clip range                         pg = e^0.05
    #   tok 2: r = e^0.3 = 1.3499 -> min(−1.3499, 1.1·−1 = −1.1) = −1.3499 (NOT clipped:
    #          with Â < 0 the pessimistic bound keeps the large ratio)              pg = e^0.3
    #   step mean = (0.9 + 1.05127 + 1.34986)/3 = 1.10038
    # loss = (−2.1 + 1.10038)/2 = −0.49981
    step0 = (-2.2 - 2.0) / 2
    step1 = (0.9 + math.exp(0.05) + math.exp(0.3)) / 3
    assert loss.item() == pytest.approx((step0 + step1) / 2, rel=1e-6)
    assert loss.item() == pytest.approx(-0.49981, abs=1e-5)
    # |r − 1| > 0.1 for e^0.2, e^−0.2, e^0.3: 3 of 5 real tokens
    assert stats.clip_fraction.item() == pytest.approx(0.6)
    # approx_kl = mean over the 5 real tokens of (r − 1) − log r
    #   = (0.021403 + 0 + 0.018731 + 0.001271 + 0.049859)/5 = 0.018253
    expected_kl = sum(math.exp(d) - 1 - d for d in (0.2, 0.0, -0.2, 0.05, 0.3)) / 5
    assert stats.approx_kl.item() == pytest.approx(expected_kl, rel=1e-5)
    assert stats.approx_kl.item() == pytest.approx(0.018253, abs=1e-6)


def test_token_policy_loss_gradient_by_hand():
    ex = two_step_example()
    loss, _ = token_policy_loss(ex["logprobs"], ex["old_logprobs"], ex["advantages"], ex["mask"], EPS)
    loss.backward()
    # Unclipped token: ∂/∂logp of −Â·r/(T_t·B) = −Â·r/(T_t·B); clipped token: 0; padding: 0.
    #   step 0 (T=2, Â=2):  tok 0 clipped -> 0;   tok 1: −2·1/(2·2) = −0.5
    #   step 1 (T=3, Â=−1): tok 0 clipped -> 0;   tok 1: e^0.05/6 = 0.17521;  tok 2: e^0.3/6 = 0.22498
    expected = torch.tensor([[0.0, -0.5, 0.0], [0.0, math.exp(0.05) / 6, math.exp(0.3) / 6]])
    torch.testing.assert_close(ex["logprobs"].grad, expected)


def test_token_policy_loss_counts_the_first_token():
    # A one-token response: the first (and only) token must carry the whole loss.
    # r = e^0.05, Â = 1 -> loss = −e^0.05 = −1.05127
    logprobs = torch.tensor([[0.05, 0.0]])
    loss, _ = token_policy_loss(logprobs, torch.zeros(1, 2), torch.tensor([1.0]), torch.tensor([[1, 0]]), EPS)
    assert loss.item() == pytest.approx(-math.exp(0.05))


def test_token_policy_loss_excludes_zero_length_steps():
    # Adding a step with no real tokens (and a huge advantage) must not change the loss:
    # it is left out of the mean over steps instead of counting as a 0 or dividing by 0.
    ex = two_step_example()
    base, _ = token_policy_loss(ex["logprobs"], ex["old_logprobs"], ex["advantages"], ex["mask"], EPS)
    loss, _ = token_policy_loss(
        torch.cat([ex["logprobs"], torch.tensor([[3.0, 3.0, 3.0]])]),
        torch.cat([ex["old_logprobs"], torch.zeros(1, 3)]),
        torch.cat([ex["advantages"], torch.tensor([100.0])]),
        torch.cat([ex["mask"], torch.zeros(1, 3, dtype=torch.long)]),
        EPS,
    )
    assert loss.item() == pytest.approx(base.item())


def test_k3_kl_by_hand():
    # Δ = log π_ref − log π_θ.   Δ = 0 -> e^0 − 0 − 1 = 0;   Δ = ln 2 -> 2 − ln 2 − 1 = 0.306853
    logprobs = torch.tensor([[-1.0, -1.0], [-2.0, GARBAGE]])
    ref = torch.tensor([[-1.0, -1.0 + LN2], [-2.0 + LN2, -GARBAGE]])
    mask = torch.tensor([[1, 1], [1, 0]])
    # step 0: (0 + 0.306853)/2 = 0.153426;  step 1: 0.306853;  mean = 0.230140
    assert k3_kl(logprobs, ref, mask).item() == pytest.approx((0.5 * (1 - LN2) + (1 - LN2)) / 2)
    assert k3_kl(logprobs, ref, mask).item() == pytest.approx(0.230140, abs=1e-6)
    assert k3_kl(logprobs, logprobs, mask).item() == 0.0


def test_k3_kl_gradient_pulls_policy_towards_reference():
    # ∂kl/∂log π_θ = 1 − e^Δ.
    # Policy below the reference (Δ = ln 2): grad = 1 − 2 = −1 < 0, so descent raises log π_θ.
    below = torch.tensor([[-1.0]], requires_grad=True)
    k3_kl(below, torch.tensor([[-1.0 + LN2]]), torch.ones(1, 1)).backward()
    assert below.grad.item() == pytest.approx(-1.0)
    # Policy above the reference (Δ = −ln 2): grad = 1 − 0.5 = +0.5 > 0, so descent lowers it.
    above = torch.tensor([[-1.0]], requires_grad=True)
    k3_kl(above, torch.tensor([[-1.0 - LN2]]), torch.ones(1, 1)).backward()
    assert above.grad.item() == pytest.approx(0.5)


def test_value_loss_by_hand():
    # ½·mean((1−0)², (2−4)²) = ½·(1 + 4)/2 = 1.25
    assert value_loss(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 4.0])).item() == pytest.approx(1.25)


def test_clipped_value_loss_by_hand():
    values = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    returns = torch.tensor([0.0, 4.0, 0.0])
    old_values = torch.tensor([1.5, 1.9, 2.0])
    loss = value_loss(values, returns, old_values=old_values, clip_eps=0.2)
    # step 0: V−old = −0.5 -> clip −0.2 -> V_clip = 1.3; max((1−0)², (1.3−0)²) = max(1, 1.69) = 1.69
    # step 1: V−old = 0.1 inside -> V_clip = 2.0;           max(4, 4) = 4
    # step 2: V−old = 1.0 -> clip 0.2 -> V_clip = 2.2;       max(9, 4.84) = 9
    # ½·(1.69 + 4 + 9)/3 = 2.448333
    assert loss.item() == pytest.approx(0.5 * (1.69 + 4.0 + 9.0) / 3)
    loss.backward()
    # step 0 takes the clipped branch -> no gradient; steps 1, 2: (V − R)/3 = −2/3, 3/3
    torch.testing.assert_close(values.grad, torch.tensor([0.0, -2.0 / 3, 1.0]))


def test_clipped_value_loss_needs_old_values():
    with pytest.raises(ValueError, match="old_values"):
        value_loss(torch.zeros(2), torch.zeros(2), clip_eps=0.2)


def test_rl4vlm_step_logprob_by_hand():
    token_logprobs = torch.tensor([[-1.0, -2.0, -3.0, -0.5], [-1.0, -4.0, GARBAGE, GARBAGE]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    action_mask = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 1]])  # action mask spilling into padding is ignored
    # row 0: thought −1 + −2 = −3, action −3 + −0.5 = −3.5 -> 0.5·(−3) + (−3.5) = −5.0
    # row 1: thought −1,          action −4            -> 0.5·(−1) + (−4)   = −4.5
    out = rl4vlm_step_logprob(token_logprobs, mask, action_mask, lam=0.5)
    torch.testing.assert_close(out, torch.tensor([-5.0, -4.5]))


def test_step_policy_loss_by_hand():
    step_logprobs = torch.tensor([-4.8, -5.3, -5.0])
    old = torch.tensor([-5.0, -5.0, -5.0])  # log-ratios 0.2, −0.3, 0
    advantages = torch.tensor([1.0, 1.0, -3.0])
    loss, stats = step_policy_loss(step_logprobs, old, advantages, EPS)
    # step 0: r = e^0.2 = 1.2214, Â = 1 -> min(1.2214, 1.1) = 1.1
    # step 1: r = e^−0.3 = 0.7408, Â = 1 -> min(0.7408, 0.9) = 0.7408
    # step 2: r = 1, Â = −3 -> −3
    # loss = −(1.1 + 0.7408 − 3)/3 = 0.386394
    assert loss.item() == pytest.approx(-(1.1 + math.exp(-0.3) - 3.0) / 3, rel=1e-5)
    assert loss.item() == pytest.approx(0.386394, abs=1e-5)
    assert stats.clip_fraction.item() == pytest.approx(2 / 3)  # steps 0 and 1


def simple_vldac_inputs() -> dict[str, torch.Tensor]:
    """1 step, 1 token: r = 1, Â = 2; Δ = ln 2; V = 1, R̂ = 3."""
    return {
        "logprobs": torch.tensor([[math.log(0.25)]], requires_grad=True),
        "old_logprobs": torch.tensor([[math.log(0.25)]]),
        "ref_logprobs": torch.tensor([[math.log(0.5)]]),
        "mask": torch.ones(1, 1),
        "advantages": torch.tensor([2.0]),
        "values": torch.tensor([1.0], requires_grad=True),
        "returns": torch.tensor([3.0]),
    }


def test_vldac_loss_weights_by_hand():
    ex = simple_vldac_inputs()
    loss, stats = vldac_loss(**ex, clip_eps=EPS, kl_beta=0.05, value_coef=0.15, policy_frozen=False)
    # L_π = −min(1·2, 1·2) = −2
    # L_KL = e^ln2 − ln2 − 1 = 1 − ln 2 = 0.306853
    # L_V = ½·(1 − 3)² = 2
    # L = −2 + 0.05·0.306853 + 0.15·2 = −1.684657
    assert stats.policy_loss.item() == pytest.approx(-2.0)
    assert stats.kl.item() == pytest.approx(1 - LN2)
    assert stats.value_loss.item() == pytest.approx(2.0)
    assert stats.entropy is None
    assert loss.item() == pytest.approx(-2.0 + 0.05 * (1 - LN2) + 0.15 * 2.0)
    assert loss.item() == pytest.approx(-1.684657, abs=1e-6)
    loss.backward()
    # ∂L/∂logp = −Â·r + β(1 − e^Δ) = −2 + 0.05·(1 − 2) = −2.05;  ∂L/∂V = α·(V − R̂) = 0.15·(−2) = −0.3
    assert ex["logprobs"].grad.item() == pytest.approx(-2.05)
    assert ex["values"].grad.item() == pytest.approx(-0.3)


def test_vldac_loss_entropy_bonus():
    ex = simple_vldac_inputs()
    loss, stats = vldac_loss(
        **ex,
        clip_eps=EPS,
        kl_beta=0.05,
        value_coef=0.15,
        policy_frozen=False,
        entropy=torch.tensor([[1.5]]),
        entropy_coef=0.01,
    )
    # −1.684657 − 0.01·1.5 = −1.699657
    assert loss.item() == pytest.approx(-2.0 + 0.05 * (1 - LN2) + 0.3 - 0.015)
    assert stats.entropy.item() == pytest.approx(1.5)
    with pytest.raises(ValueError, match="entropy"):
        vldac_loss(**ex, clip_eps=EPS, kl_beta=0.05, value_coef=0.15, policy_frozen=False, entropy_coef=0.01)


def test_vldac_loss_warmup_optimises_only_the_value_loss():
    ex = simple_vldac_inputs()
    loss, stats = vldac_loss(**ex, clip_eps=EPS, kl_beta=0.05, value_coef=0.15, policy_frozen=True)
    # only α·L_V = 0.15·2 = 0.3
    assert loss.item() == pytest.approx(0.3)
    # no gradient path to the policy log-probs, a normal one to the value head
    grad_logprobs, grad_values = torch.autograd.grad(loss, [ex["logprobs"], ex["values"]], allow_unused=True)
    assert grad_logprobs is None
    assert grad_values.item() == pytest.approx(-0.3)
    # the policy/KL stats are still reported for logging, detached
    assert stats.policy_loss.item() == pytest.approx(-2.0)
    assert stats.kl.item() == pytest.approx(1 - LN2)
    assert not stats.policy_loss.requires_grad and not stats.kl.requires_grad


def test_value_loss_step_mask_by_hand():
    # Step 1 was dropped (its env worker crashed): ½·((1−0)² + (3−1)²)/2 = ½·(1 + 4)/2 = 1.25;
    # its garbage value (inf) must not leak.
    values = torch.tensor([1.0, float("inf"), 3.0], requires_grad=True)
    loss = value_loss(values, torch.tensor([0.0, 5.0, 1.0]), step_mask=torch.tensor([True, False, True]))
    assert loss.item() == pytest.approx(1.25)
    loss.backward()
    torch.testing.assert_close(values.grad, torch.tensor([0.5, 0.0, 1.0]))  # (V − R)/2


def test_vldac_loss_step_mask_equals_the_loss_without_the_dropped_steps():
    ex = two_step_example()
    B = 3  # add a third step that gets dropped; its inputs are garbage
    logprobs = torch.cat([ex["logprobs"].detach(), torch.full((1, 3), GARBAGE)]).requires_grad_(True)
    kwargs = dict(
        old_logprobs=torch.cat([ex["old_logprobs"], torch.zeros(1, 3)]),
        ref_logprobs=torch.zeros(B, 3),
        mask=torch.cat([ex["mask"], torch.ones(1, 3, dtype=torch.long)]),
        advantages=torch.tensor([2.0, -1.0, 1e6]),
        values=torch.tensor([0.5, 1.0, float("nan")]),
        returns=torch.tensor([1.0, 0.0, 3.0]),
        clip_eps=EPS, kl_beta=0.05, value_coef=0.15, policy_frozen=False,
    )
    masked, stats = vldac_loss(logprobs, step_mask=torch.tensor([True, True, False]), **kwargs)
    kept = {k: (v[:2] if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()}
    reference, ref_stats = vldac_loss(logprobs[:2], **kept)
    assert torch.isfinite(masked)
    assert masked.item() == pytest.approx(reference.item())
    assert stats.value_loss.item() == pytest.approx(ref_stats.value_loss.item())
    masked.backward()
    assert logprobs.grad[2].abs().sum() == 0  # no gradient through the dropped step
