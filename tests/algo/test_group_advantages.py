"""Hand-computed LOOP, GRPO and GiGPO advantages (torchtune style: the numbers are in the test)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

from vldac_lightning.algo.advantages import loo_advantages
from vldac_lightning.algo.gigpo import GiGPO, observation_key
from vldac_lightning.algo.group_advantages import (
    anchor_step_advantages,
    discounted_returns_to_go,
    episode_returns,
    group_leave_one_out,
    group_normalized,
)
from vldac_lightning.algo.grpo import GRPO
from vldac_lightning.algo.loop import LOOP
from vldac_lightning.rollout.buffer import Rollout
from vldac_lightning.rollout.collector import StepRecord

PPO = {"clip_eps": 0.1, "kl_beta": 0.0, "kl_reference": "base", "warmup_updates": 0}


def test_episode_returns_sum_rewards_per_episode_and_skip_dropped_ones() -> None:
    # steps (collection order):   e0  e1  e0  e2  e1  e2
    rewards = torch.tensor([0.0, 1.0, -1.0, 5.0, 2.0, 5.0])
    episodes = torch.tensor([0, 1, 0, 2, 1, 2])
    groups = torch.tensor([0, 0, 0, 1, 0, 1])
    valid = torch.tensor([True, True, True, False, True, False])  # e2 was dropped (worker crash)
    out = episode_returns(rewards, episodes, groups, valid)
    # e0: 0 − 1 = −1;  e1: 1 + 2 = 3;  e2 left out
    assert out.episode_ids.tolist() == [0, 1]
    assert out.returns.tolist() == [-1.0, 3.0]
    assert out.group_ids.tolist() == [0, 0]


def test_grpo_group_normalised_returns_by_hand() -> None:
    # group 0: returns 1, 0, 3 → mean 4/3, sample std √(((−1/3)² + (−4/3)² + (5/3)²)/2) = √(7/3) = 1.527525
    #   A = (1 − 4/3)/1.527525 = −0.218218, (0 − 4/3)/1.527525 = −0.872872, (3 − 4/3)/1.527525 = 1.091089
    # group 1: returns 2, 2 → all equal: 0 / (0 + ε) = 0 (nothing to prefer)
    # group 2: one surviving episode → no baseline: 0
    returns = torch.tensor([1.0, 0.0, 3.0, 2.0, 2.0, 7.0])
    groups = [0, 0, 0, 1, 1, 2]
    out = group_normalized(returns, groups, scale="std", eps=1e-6)
    std = math.sqrt(7 / 3)
    expected = [(1 - 4 / 3) / std, (0 - 4 / 3) / std, (3 - 4 / 3) / std, 0.0, 0.0, 0.0]
    torch.testing.assert_close(out, torch.tensor(expected), atol=1e-5, rtol=0)
    assert out[:3].tolist() == pytest.approx([-0.218218, -0.872872, 1.091089], abs=1e-5)
    # "mean-norm" (F_norm = 1): just centred, 1 − 4/3 = −1/3, −4/3, 5/3
    centred = group_normalized(returns, groups, scale="none")
    assert centred[:3].tolist() == pytest.approx([-1 / 3, -4 / 3, 5 / 3])


def test_loop_leave_one_out_by_hand_and_ragged_groups() -> None:
    # group 0: returns 1, 0, 3; the others' means are (0+3)/2 = 1.5, (1+3)/2 = 2, (1+0)/2 = 0.5
    #   → A = 1 − 1.5 = −0.5, 0 − 2 = −2, 3 − 0.5 = 2.5
    # group 1: returns 4, 2 → 4 − 2 = 2, 2 − 4 = −2;  group 2: a lone survivor → 0
    returns = torch.tensor([1.0, 0.0, 3.0, 4.0, 2.0, 9.0])
    out = group_leave_one_out(returns, [0, 0, 0, 1, 1, 2])
    assert out.tolist() == pytest.approx([-0.5, -2.0, 2.5, 2.0, -2.0, 0.0])
    # Full groups agree with the [G, K] helper.
    torch.testing.assert_close(out[:3], loo_advantages(returns[:3].unsqueeze(0)).squeeze(0))


def test_discounted_returns_to_go_within_interleaved_episodes() -> None:
    # γ = 0.5; steps of episodes 0 and 1 interleave as a rollout collects them:
    #   e0 rewards 0, 0, 1  → R = 0.25, 0.5, 1;    e1 rewards 2, 4 → R = 2 + 0.5·4 = 4, 4
    rewards = torch.tensor([0.0, 2.0, 0.0, 4.0, 1.0])
    episodes = torch.tensor([0, 1, 0, 1, 0])
    assert discounted_returns_to_go(rewards, episodes, 0.5).tolist() == [0.25, 4.0, 0.5, 4.0, 1.0]


def _obs(name: str) -> dict[str, Any]:
    """An observation whose image is a function of ``name`` (equal names: identical bytes)."""
    pixel = sum(map(ord, name)) % 256
    return {"images": np.full((1, 4, 4, 3), pixel, np.uint8), "text": f"state {name}"}


def grouped_rollout(steps: list[tuple[str, int, int, float, bool]]) -> Rollout:
    """A whole-episode rollout of shape [S, 1] from (observation, episode, group, reward, last) rows."""
    S = len(steps)
    col = lambda xs, dtype: torch.tensor(xs, dtype=dtype).unsqueeze(1)  # noqa: E731
    return Rollout(
        rewards=col([s[3] for s in steps], torch.float32), terminated=col([s[4] for s in steps], torch.bool),
        truncated=torch.zeros(S, 1, dtype=torch.bool), values=torch.zeros(S, 1), next_values=torch.zeros(S, 1),
        old_logprobs=torch.zeros(S, 2), response_mask=torch.ones(S, 2, dtype=torch.bool),
        steps=[StepRecord(_obs(s[0]), torch.tensor([1, 2])) for s in steps],
        episode_ids=col([s[1] for s in steps], torch.long), group_ids=col([s[2] for s in steps], torch.long),
    )


# Group 0 = episodes 0 and 1 (same task: both start in A); group 1 = episodes 2 and 3 (both start in B).
#   τ0: A (r 0) → B (r 0) → C (r 1)            R(τ0) = 1
#   τ1: A (r 0) → D (r 0) → B (r 0) → E (r 4)  R(τ1) = 4
#   τ2: B (r 0)                                R(τ2) = 0
#   τ3: B (r 3)                                R(τ3) = 3
# Collection order interleaves the copies step by step.
GIGPO_STEPS = [
    ("A", 0, 0, 0.0, False), ("A", 1, 0, 0.0, False), ("B", 2, 1, 0.0, True), ("B", 3, 1, 3.0, True),
    ("B", 0, 0, 0.0, False), ("D", 1, 0, 0.0, False),
    ("C", 0, 0, 1.0, True), ("B", 1, 0, 0.0, False),
    ("E", 1, 0, 4.0, True),
]


def test_gigpo_anchor_states_group_identical_observations_within_a_task_group_only() -> None:
    """GiGPO with γ = 0.5, ω = 1 and "mean-norm" (F_norm = 1) so that every number is exact.

    Episode level: group 0 returns 1, 4 → mean 2.5 → A^E = −1.5 (τ0), +1.5 (τ1);
                   group 1 returns 0, 3 → mean 1.5 → A^E = −1.5 (τ2), +1.5 (τ3).
    Step returns (γ = 0.5): τ0: A 0.25, B 0.5, C 1;   τ1: A 0.5, D 1, B 2, E 4;   τ2: B 0;   τ3: B 3.
    Anchor groups of group 0: A = {τ0 t0: 0.25, τ1 t0: 0.5} → mean 0.375 → ∓0.125;
                              B = {τ0 t1: 0.5, τ1 t2: 2} (met at different steps) → mean 1.25 → ∓0.75;
                              C, D, E are singletons → 0.
    Group 1's B is the same observation but another task group: B = {0, 3} → mean 1.5 → ∓1.5.
    (Pooled with group 0's B the mean would be (0.5 + 2 + 0 + 3)/4 = 1.375 instead.)
    A = A^E + A^S:  τ0: A −1.625, B −2.25, C −1.5;   τ1: A 1.625, D 1.5, B 2.25, E 1.5;
                    τ2: B −3;   τ3: B 3.
    """
    rollout = grouped_rollout(GIGPO_STEPS)
    algo = GiGPO({**PPO, "step_gamma": 0.5, "step_weight": 1.0, "norm": "mean", "adv_eps": 1e-6})
    targets = algo.targets(rollout)
    assert targets.returns is None  # no critic
    # rows in collection order: τ0A τ1A τ2B τ3B τ0B τ1D τ0C τ1B τ1E
    expected = [-1.625, 1.625, -3.0, 3.0, -2.25, 1.5, -1.5, 2.25, 1.5]
    assert targets.advantages.squeeze(1).tolist() == pytest.approx(expected)


def test_gigpo_step_advantage_alone_and_with_std_norm() -> None:
    rewards = torch.tensor([s[3] for s in GIGPO_STEPS])
    episodes = torch.tensor([s[1] for s in GIGPO_STEPS])
    groups = torch.tensor([s[2] for s in GIGPO_STEPS])
    keys = [(s[0]) for s in GIGPO_STEPS]
    step_returns = discounted_returns_to_go(rewards, episodes, 0.5)
    # With F_norm = std, a two-member anchor group is always ∓(d/2)/(|d|/√2) = ∓1/√2 = ∓0.707107.
    a = anchor_step_advantages(step_returns, keys, groups, scale="std")
    r = 1 / math.sqrt(2)
    assert a.tolist() == pytest.approx([-r, r, -r, r, -r, 0.0, 0.0, r, 0.0], abs=1e-5)
    # A dropped step leaves its anchor group: τ3's B gone → group 1's B is a singleton → 0 for τ2 too.
    valid = torch.ones(9, dtype=torch.bool)
    valid[3] = False
    a = anchor_step_advantages(step_returns, keys, groups, valid, scale="std")
    assert a[2].item() == 0.0 and a[3].item() == 0.0


def test_loop_and_grpo_give_every_step_its_episode_advantage_and_zero_to_dropped_episodes() -> None:
    rollout = grouped_rollout(GIGPO_STEPS)
    # LOOP: group 0 returns 1, 4 → −3, +3;  group 1 returns 0, 3 → −3, +3.
    loop = LOOP(PPO).targets(rollout).advantages.squeeze(1)
    assert loop.tolist() == pytest.approx([-3, 3, -3, 3, -3, 3, -3, 3, 3])
    # GRPO: a pair always normalises to ∓1/√2 (sample std |d|/√2).
    grpo = GRPO({**PPO, "adv_eps": 1e-6}).targets(rollout).advantages.squeeze(1)
    r = 1 / math.sqrt(2)
    assert grpo.tolist() == pytest.approx([-r, r, -r, r, -r, r, -r, r, r], abs=1e-5)
    # τ3 dropped (its worker crashed): group 1 re-balances to its lone survivor τ2 → 0; τ3's steps → 0.
    rollout.valid = torch.ones(9, 1, dtype=torch.bool)
    rollout.valid[3] = False
    loop = LOOP(PPO).targets(rollout).advantages.squeeze(1)
    assert loop.tolist() == pytest.approx([-3, 3, 0, 0, -3, 3, -3, 3, 3])


def _history_obs(previous: str, current: str) -> dict[str, Any]:
    """A two-frame observation (image_history = 2): the frame before, then the current one."""
    return {"images": np.concatenate([_obs(previous)["images"], _obs(current)["images"]]), "text": "state"}


def test_gigpo_pools_one_state_reached_by_two_paths_under_the_current_anchor_only() -> None:
    """τ0 reaches B from A, τ1 from D (image_history 2: their frame histories differ, B is the newest).

    Step returns with γ = 0.5: τ0: A→B r 0, B r 1 → R_B = 1;  τ1: D→B r 0, B r 3 → R_B = 3.
    anchor=current: B's two occurrences are one anchor → mean 2 → A^S = ∓1 (mean-norm).
    anchor=history: the histories (A,B) and (D,B) differ → two singletons → A^S = 0.
    """
    steps = [(("x", "A"), 0, 0.0, False), (("x", "D"), 1, 0.0, False),
             (("A", "B"), 0, 1.0, True), (("D", "B"), 1, 3.0, True)]
    rewards = torch.tensor([s[2] for s in steps])
    episodes = torch.tensor([s[1] for s in steps])
    groups = torch.zeros(4, dtype=torch.long)
    step_returns = discounted_returns_to_go(rewards, episodes, 0.5)
    for anchor, expected in (("current", [0.0, 0.0, -1.0, 1.0]), ("history", [0.0, 0.0, 0.0, 0.0])):
        keys = [observation_key(_history_obs(*s[0]), anchor) for s in steps]
        a = anchor_step_advantages(step_returns, keys, groups, scale="none")
        assert a.tolist() == pytest.approx(expected), anchor
    # An env-provided state key wins over the pixels: different frames, same key → one anchor.
    left, right = _history_obs("A", "B"), _history_obs("D", "C")
    assert observation_key(left) != observation_key(right)
    assert observation_key({**left, "state_key": 7}) == observation_key({**right, "state_key": 7})
    with pytest.raises(ValueError, match="algo.anchor"):
        observation_key(left, "newest")
