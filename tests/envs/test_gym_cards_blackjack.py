"""Gym-Cards Blackjack: gymnasium's rules, checked against gymnasium's own Blackjack."""

from __future__ import annotations

import gymnasium.envs.toy_text.blackjack as gym_bj
import numpy as np

from vldac_lightning.envs.gym_cards import BlackjackEnv
from vldac_lightning.envs.gym_cards.base import RANK_VALUES

STAND, HIT = 0, 1


def test_initial_state_hides_dealer_hole_card():
    env = BlackjackEnv()
    _, info = env.reset(options={"deck": ["10", "6", "A", "5"]})
    assert info["dealer_cards"] == ["10"] and info["dealer_sum"] == 10
    assert info["player_cards"] == ["A", "5"] and info["player_sum"] == 16 and info["usable_ace"] is True


def test_bust_on_hit_minus_one_and_reveals_dealer():
    env = BlackjackEnv()
    env.reset(options={"deck": ["10", "6", "10", "9", "5"]})
    _, r, term, trunc, info = env.step(HIT)
    assert (r, term, trunc) == (-1.0, True, False)
    assert info["player_sum"] == 24 and info["dealer_cards"] == ["10", "6"] and info["success"] is False


def test_hit_without_bust_continues():
    env = BlackjackEnv()
    env.reset(options={"deck": ["10", "6", "A", "2", "K"]})
    _, r, term, _, info = env.step(HIT)  # soft 13 + 10 = hard 13
    assert (r, term, info["player_sum"], info["usable_ace"]) == (0.0, False, 13, False)
    assert info["dealer_cards"] == ["10"]


def test_stand_dealer_draws_to_17():
    env = BlackjackEnv()
    env.reset(options={"deck": ["10", "2", "10", "9", "3", "A", "5"]})
    _, r, term, _, info = env.step(STAND)
    # Dealer 12 -> 15 -> 16 (ace counts 1: 11 would bust) -> 21 and stops; player 19 loses.
    assert info["dealer_cards"] == ["10", "2", "3", "A", "5"] and info["dealer_sum"] == 21
    assert (r, term) == (-1.0, True)


def test_dealer_stands_on_soft_17_and_outcomes():
    env = BlackjackEnv()
    env.reset(options={"deck": ["A", "6", "10", "8", "9"]})
    _, r, _, _, info = env.step(STAND)
    assert info["dealer_cards"] == ["A", "6"] and info["dealer_sum"] == 17 and r == 1.0 and info["success"]
    env.reset(options={"deck": ["10", "7", "10", "7"]})
    assert env.step(STAND)[1] == 0.0  # push
    env.reset(options={"deck": ["10", "6", "10", "7", "10"]})
    _, r, _, _, info = env.step(STAND)
    assert info["dealer_sum"] == 26 and r == 1.0  # dealer bust


def test_dealer_final_sum_at_least_17_over_many_seeds():
    env = BlackjackEnv()
    for seed in range(200):
        env.reset(seed=seed)
        _, _, term, _, info = env.step(STAND)
        values = [RANK_VALUES[c] for c in info["dealer_cards"]]
        assert term and gym_bj.sum_hand(values) >= 17
        if len(values) > 2:  # it stopped as soon as it reached 17
            assert gym_bj.sum_hand(values[:-1]) < 17


def test_matches_gymnasium_blackjack_on_identical_cards(monkeypatch):
    rng = np.random.default_rng(0)
    ranks = list(RANK_VALUES)
    for episode in range(300):
        deck = [ranks[i] for i in rng.integers(len(ranks), size=20)]
        values = iter([RANK_VALUES[r] for r in deck])
        monkeypatch.setattr(gym_bj, "draw_card", lambda np_random, it=values: next(it))
        ref = gym_bj.BlackjackEnv()
        ref.reset(seed=episode)
        env = BlackjackEnv()
        _, info = env.reset(seed=episode, options={"deck": deck})
        assert info["player_sum"] == gym_bj.sum_hand(ref.player)
        assert info["dealer_sum"] == gym_bj.sum_hand(ref.dealer[:1])  # only the up card is visible
        done = False
        while not done:
            action = int(rng.integers(2))
            _, r_ref, term_ref, _, _ = ref.step(action)
            _, r, term, trunc, info = env.step(action)
            assert (r, term) == (r_ref, term_ref) and not trunc
            done = term
        assert [RANK_VALUES[c] for c in info["player_cards"]] == ref.player
        assert info["success"] == (r_ref > 0)


def test_verl_agent_profile_and_natural_payout():
    env = BlackjackEnv(reward_profile="verl_agent")
    env.reset(options={"deck": ["10", "6", "10", "9", "5"]})
    assert env.step(HIT)[1] == 0.0  # bust: 0 instead of -1
    env = BlackjackEnv(natural=True)
    env.reset(options={"deck": ["10", "7", "A", "K"]})
    assert env.step(STAND)[1] == 1.5
    env = BlackjackEnv()
    env.reset(options={"deck": ["10", "7", "A", "K"]})
    assert env.step(STAND)[1] == 1.0  # gymnasium default: no special payout


def test_oracle_hits_below_17():
    env = BlackjackEnv()
    env.reset(options={"deck": ["10", "6", "10", "6"]})
    assert env.action_names[env.oracle_action()] == "hit"
    env.reset(options={"deck": ["10", "6", "10", "7"]})
    assert env.action_names[env.oracle_action()] == "stand"
    env.step(STAND)
    assert env.oracle_action() is None


def test_image_shows_card_back_until_the_end():
    env = BlackjackEnv()
    before, _ = env.reset(options={"deck": ["10", "6", "10", "7"]})
    after = env.step(STAND)[0]
    assert not np.array_equal(before, after)
    blue = (30, 60, 150)
    assert (before == blue).all(-1).any() and not (after == blue).all(-1).any()
