"""Hand-computed checks of GAE, standardisation, LOOP and explained variance.

GAE recursion used in the comments:
    δ_t = r_t + γ·V(s_{t+1})·[not terminated] − V(s_t)
    Â_t = δ_t + γλ·[not done]·Â_{t+1},   R̂_t = Â_t + V(s_t)
With γ = 0.9, λ = 0.8: γλ = 0.72.
"""

import math

import pytest
import torch

from vldac_lightning.algo import compute_gae, explained_variance, loo_advantages, standardize

GAMMA, LAM = 0.9, 0.8
NAN = float("nan")


def col(*xs: float) -> torch.Tensor:
    """A [T, 1] column: T steps of a single env."""
    return torch.tensor(xs, dtype=torch.float64).unsqueeze(1)


def flags(*xs: int) -> torch.Tensor:
    return torch.tensor(xs, dtype=torch.bool).unsqueeze(1)


def assert_close(actual: torch.Tensor, expected: list[float]) -> None:
    torch.testing.assert_close(actual.squeeze(1), torch.tensor(expected, dtype=torch.float64))


def test_gae_termination_mid_rollout_stops_recursion_and_ignores_next_value():
    # t=0: r=1,    V=0.5, next V=1.0 (= V[1])
    # t=1: r=-1,   V=1.0, terminated -> next value ignored (NaN placeholder must not leak)
    # t=2: r=0.5,  V=2.0 (first step of a new episode), rollout cut -> bootstrap next V=3.0
    adv, ret = compute_gae(
        rewards=col(1.0, -1.0, 0.5),
        values=col(0.5, 1.0, 2.0),
        next_values=col(1.0, NAN, 3.0),
        terminated=flags(0, 1, 0),
        truncated=flags(0, 0, 0),
        gamma=GAMMA,
        lam=LAM,
    )
    # t=2: δ = 0.5 + 0.9·3.0 − 2.0 = 1.2;               Â = 1.2
    # t=1: δ = −1 + 0 − 1.0 = −2.0; episode over:        Â = −2.0   (nothing from t=2)
    # t=0: δ = 1 + 0.9·1.0 − 0.5 = 1.4;                  Â = 1.4 + 0.72·(−2.0) = −0.04
    assert_close(adv, [-0.04, -2.0, 1.2])
    # R̂ = Â + V: 0.46, −1.0, 3.2
    assert_close(ret, [0.46, -1.0, 3.2])


def test_gae_terminal_penalty_on_last_step_reaches_returns():
    # Failure penalty −1 on a terminated last step (what an env wrapper adds on failure).
    adv, ret = compute_gae(
        rewards=col(0.0, 0.0, -1.0),
        values=col(0.2, 0.4, 0.6),
        next_values=col(0.4, 0.6, NAN),
        terminated=flags(0, 0, 1),
        truncated=flags(0, 0, 0),
        gamma=GAMMA,
        lam=LAM,
    )
    # t=2: δ = −1 − 0.6 = −1.6;                  Â = −1.6,                       R̂ = −1.0
    # t=1: δ = 0.9·0.6 − 0.4 = 0.14;             Â = 0.14 + 0.72·(−1.6) = −1.012, R̂ = −0.612
    # t=0: δ = 0.9·0.4 − 0.2 = 0.16;             Â = 0.16 + 0.72·(−1.012) = −0.56864, R̂ = −0.36864
    # Cross-check with the λ-return R̂_t = r_t + γ((1−λ)V_{t+1} + λR̂_{t+1}):
    #   R̂_1 = 0.9·(0.2·0.6 + 0.8·(−1.0)) = −0.612;  R̂_0 = 0.9·(0.2·0.4 + 0.8·(−0.612)) = −0.36864
    assert_close(adv, [-0.56864, -1.012, -1.6])
    assert_close(ret, [-0.36864, -0.612, -1.0])
    assert ret[2, 0].item() == pytest.approx(-1.0)  # the penalty is the whole target of the last step


def test_gae_truncation_bootstraps_from_final_observation_value():
    # t=1 is truncated by a time limit: next_values[1] = V(final obs) = 4.0, which is NOT
    # values[2] = 0.5 (that is already the reset state of the next episode).
    adv, ret = compute_gae(
        rewards=col(0.0, 1.0, 0.0),
        values=col(1.0, 2.0, 0.5),
        next_values=col(2.0, 4.0, 1.0),
        terminated=flags(0, 0, 0),
        truncated=flags(0, 1, 0),
        gamma=GAMMA,
        lam=LAM,
    )
    # t=2: δ = 0 + 0.9·1.0 − 0.5 = 0.4;          Â = 0.4
    # t=1: δ = 1 + 0.9·4.0 − 2.0 = 2.6;          Â = 2.6   (bootstrapped, but λ-recursion stops)
    # t=0: δ = 0 + 0.9·2.0 − 1.0 = 0.8;          Â = 0.8 + 0.72·2.6 = 2.672
    assert_close(adv, [2.672, 2.6, 0.4])
    assert_close(ret, [3.672, 4.6, 0.9])


def test_gae_rollout_cut_bootstraps_last_step():
    # No episode ends inside the rollout; the last row bootstraps from next_values[T−1] = 10.
    adv, ret = compute_gae(
        rewards=col(1.0, 0.0, 1.0),
        values=col(1.0, 1.0, 1.0),
        next_values=col(1.0, 1.0, 10.0),
        terminated=flags(0, 0, 0),
        truncated=flags(0, 0, 0),
        gamma=GAMMA,
        lam=LAM,
    )
    # t=2: δ = 1 + 0.9·10 − 1 = 9;               Â = 9
    # t=1: δ = 0 + 0.9·1 − 1 = −0.1;             Â = −0.1 + 0.72·9 = 6.38
    # t=0: δ = 1 + 0.9·1 − 1 = 0.9;              Â = 0.9 + 0.72·6.38 = 5.4936
    assert_close(adv, [5.4936, 6.38, 9.0])
    assert_close(ret, [6.4936, 7.38, 10.0])


def test_gae_gamma_lambda_one_gives_reward_to_go():
    # With γ = λ = 1 the value terms telescope: R̂_t = Σ_{k≥t} r_k within the episode,
    # whatever the (arbitrary) values are.
    values = col(0.3, -1.0, 7.0)
    adv, ret = compute_gae(
        rewards=col(1.0, 2.0, 3.0),
        values=values,
        next_values=col(-1.0, 7.0, 123.0),  # last one ignored: terminated
        terminated=flags(0, 0, 1),
        truncated=flags(0, 0, 0),
        gamma=1.0,
        lam=1.0,
    )
    assert_close(ret, [6.0, 5.0, 3.0])  # 1+2+3, 2+3, 3
    assert_close(adv, [5.7, 6.0, -4.0])  # R̂ − V


def test_gae_envs_are_independent():
    # Env 0 = the termination example, env 1 = the truncation example, side by side in [T, 2].
    rewards = torch.tensor([[1.0, 0.0], [-1.0, 1.0], [0.5, 0.0]], dtype=torch.float64)
    values = torch.tensor([[0.5, 1.0], [1.0, 2.0], [2.0, 0.5]], dtype=torch.float64)
    next_values = torch.tensor([[1.0, 2.0], [NAN, 4.0], [3.0, 1.0]], dtype=torch.float64)
    terminated = torch.tensor([[0, 0], [1, 0], [0, 0]], dtype=torch.bool)
    truncated = torch.tensor([[0, 0], [0, 1], [0, 0]], dtype=torch.bool)
    adv, ret = compute_gae(rewards, values, next_values, terminated, truncated, GAMMA, LAM)
    expected_adv = torch.tensor([[-0.04, 2.672], [-2.0, 2.6], [1.2, 0.4]], dtype=torch.float64)
    torch.testing.assert_close(adv, expected_adv)
    torch.testing.assert_close(ret, expected_adv + values)


def test_gae_carries_no_gradient_and_checks_shapes():
    values = col(1.0, 1.0).requires_grad_()
    adv, ret = compute_gae(col(0.0, 0.0), values, col(1.0, 1.0), flags(0, 0), flags(0, 0), GAMMA, LAM)
    assert not adv.requires_grad and not ret.requires_grad
    with pytest.raises(ValueError, match=r"\[T, N\]"):
        compute_gae(col(0.0, 0.0), col(1.0), col(1.0, 1.0), flags(0, 0), flags(0, 0), GAMMA, LAM)


def test_standardize_uses_population_std():
    # mean 2.5; population var = (2.25 + 0.25 + 0.25 + 2.25)/4 = 1.25, std = √1.25 = 1.1180340
    # (the unbiased std would be √(5/3) = 1.2910 - a different answer)
    out = standardize(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    s = math.sqrt(1.25)
    torch.testing.assert_close(out, torch.tensor([-1.5 / s, -0.5 / s, 0.5 / s, 1.5 / s]))
    assert out.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-6)


def test_standardize_with_mask_ignores_and_zeroes_masked_entries():
    # Only 1 and 3 count: mean 2, population std 1 -> [−1, ·, +1]; the masked 100 becomes 0.
    out = standardize(torch.tensor([1.0, 100.0, 3.0]), mask=torch.tensor([1, 0, 1]))
    torch.testing.assert_close(out, torch.tensor([-1.0, 0.0, 1.0]))


def test_standardize_constant_input_is_zero_not_nan():
    # std 0 -> (x − mean)/(0 + eps) = 0/eps = 0; a single element too (population std of 1 value = 0).
    torch.testing.assert_close(standardize(torch.full((4,), 3.0)), torch.zeros(4))
    torch.testing.assert_close(standardize(torch.tensor([5.0])), torch.zeros(1))


def test_loo_advantages_by_hand():
    returns = torch.tensor([[1.0, 2.0, 3.0], [0.0, 4.0, 4.0]])
    # group 0: others' means 2.5, 2.0, 1.5 -> 1−2.5, 2−2, 3−1.5
    # group 1: others' means 4.0, 2.0, 2.0 -> 0−4, 4−2, 4−2
    expected = torch.tensor([[-1.5, 0.0, 1.5], [-4.0, 2.0, 2.0]])
    torch.testing.assert_close(loo_advantages(returns), expected)
    # K = 2: each rollout is compared with the other one
    torch.testing.assert_close(loo_advantages(torch.tensor([[0.0, 1.0]])), torch.tensor([[-1.0, 1.0]]))


def test_loo_advantages_needs_two_rollouts_per_group():
    with pytest.raises(ValueError, match="K=1"):
        loo_advantages(torch.tensor([[1.0], [2.0]]))
    with pytest.raises(ValueError, match=r"\[G, K\]"):
        loo_advantages(torch.tensor([1.0, 2.0]))


def test_explained_variance_by_hand():
    returns = torch.tensor([1.0, 2.0, 3.0, 4.0])  # population Var = 1.25
    assert explained_variance(returns.clone(), returns) == pytest.approx(1.0)  # perfect critic
    assert explained_variance(torch.full((4,), 2.5), returns) == pytest.approx(0.0)  # constant
    # R − V = [1, 0, 0, −1]: Var = 0.5 -> 1 − 0.5/1.25 = 0.6
    assert explained_variance(torch.tensor([0.0, 2.0, 3.0, 5.0]), returns) == pytest.approx(0.6)
    # Var[R] = 0: undefined -> NaN
    assert math.isnan(explained_variance(torch.tensor([0.0, 1.0]), torch.tensor([2.0, 2.0])))
