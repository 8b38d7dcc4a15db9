"""Gym-Cards: API contract shared by the four games, registration, determinism, NumberLine."""

from __future__ import annotations

import random

import gymnasium as gym
import numpy as np
import pytest

from vldac_lightning.envs.gym_cards import (
    ENV_IDS,
    BlackjackEnv,
    EZPointsEnv,
    NumberLineEnv,
    Points24Env,
    register_gym_cards,
)

ALL_ENVS = [NumberLineEnv, EZPointsEnv, Points24Env, BlackjackEnv]


def deal_key(info: dict) -> tuple:
    """The part of an info dict that identifies a deal."""
    return tuple((k, str(v)) for k, v in sorted(info.items()))


# --- contract shared by all games -----------------------------------------------------------


@pytest.mark.parametrize("cls", ALL_ENVS)
def test_observation_shape_dtype_and_render(cls):
    env = cls(render_mode="rgb_array")
    obs, info = env.reset(seed=0)
    assert obs.shape == (300, 300, 3) and obs.dtype == np.uint8
    assert env.observation_space.contains(obs)
    assert np.array_equal(env.render(), obs)
    obs2, reward, terminated, truncated, info2 = env.step(env.action_space.sample())
    assert obs2.shape == (300, 300, 3) and obs2.dtype == np.uint8
    assert isinstance(reward, float) and isinstance(terminated, bool) and isinstance(truncated, bool)
    assert np.array_equal(env.render(), obs2)
    assert "success" in info and "success" in info2
    assert cls().render() is None  # render_mode=None renders nothing


def test_action_names_match_rl4vlm_order():
    assert NumberLineEnv.action_names == ("-", "+")
    assert EZPointsEnv.action_names == (*map(str, range(1, 11)), "+", "*", "=")
    assert Points24Env.action_names == (*map(str, range(1, 11)), "+", "-", "*", "/", "(", ")", "=")
    assert BlackjackEnv.action_names == ("stand", "hit")
    for cls, n in zip(ALL_ENVS, (2, 13, 17, 2)):
        assert cls().action_space.n == n


@pytest.mark.parametrize("cls", ALL_ENVS)
def test_unknown_reward_profile_names_choices(cls):
    with pytest.raises(ValueError, match="rl4vlm.*verl_agent|verl_agent.*rl4vlm"):
        cls(reward_profile="nope")


@pytest.mark.parametrize("cls", ALL_ENVS)
def test_same_seed_same_deal_and_image_regardless_of_global_rng(cls):
    a, b = cls(), cls()
    np.random.seed(1)
    random.seed(1)
    obs_a, info_a = a.reset(seed=123)
    np.random.seed(2)
    random.seed(2)
    obs_b, info_b = b.reset(seed=123)
    assert deal_key(info_a) == deal_key(info_b) and np.array_equal(obs_a, obs_b)
    # reset(seed=None) continues each env's own stream identically.
    obs_a, info_a = a.reset()
    obs_b, info_b = b.reset()
    assert deal_key(info_a) == deal_key(info_b) and np.array_equal(obs_a, obs_b)


@pytest.mark.parametrize("cls", ALL_ENVS)
def test_different_seeds_give_different_deals(cls):
    env = cls()
    images = {env.reset(seed=s)[0].tobytes() for s in range(20)}
    assert len(images) > 5


@pytest.mark.parametrize("cls", ALL_ENVS)
def test_step_errors(cls):
    env = cls()
    with pytest.raises(RuntimeError):
        env.step(0)  # before reset
    env.reset(seed=0)
    with pytest.raises(ValueError):
        env.step(env.action_space.n)


@pytest.mark.parametrize("env_id", sorted(ENV_IDS))
def test_registration_via_gymnasium_make(env_id):
    register_gym_cards()  # idempotent: a second call must not raise or re-register
    register_gym_cards()
    assert gym.spec(env_id).max_episode_steps is None  # the language wrapper owns the limit
    env = gym.make(env_id, render_mode="rgb_array")
    obs, info = env.reset(seed=0)
    assert obs.shape == (300, 300, 3)
    assert env.unwrapped.oracle_action() is not None or env_id.endswith("Points24-v0")
    env.close()


def test_make_passes_kwargs():
    env = gym.make("gym_cards/NumberLine-v0", max_position=9, reward_profile="verl_agent")
    _, info = env.reset(seed=0)
    assert info["max_position"] == 9 and env.unwrapped.reward_profile == "verl_agent"


# --- NumberLine -------------------------------------------------------------------------


def test_numberline_target_and_current_distinct_and_cover_range():
    env = NumberLineEnv()
    targets, currents = set(), set()
    for seed in range(300):
        _, info = env.reset(seed=seed)
        assert info["target"] != info["current"]
        assert 0 <= info["target"] <= 5 and 0 <= info["current"] <= 5
        targets.add(info["target"])
        currents.add(info["current"])
    assert targets == currents == set(range(6))


def step_name(env, name):
    return env.step(env.action_index(name))


def test_numberline_rewards():
    env = NumberLineEnv()
    env.reset(options={"target": 3, "current": 1})
    _, r, term, trunc, info = step_name(env, "-")  # away from the target
    assert (r, term, trunc, info["current"]) == (-1.0, False, False, 0)
    _, r, term, _, info = step_name(env, "+")  # closer
    assert (r, term, info["current"]) == (0.0, False, 1)
    step_name(env, "+")
    _, r, term, trunc, info = step_name(env, "+")  # reaches 3
    assert (r, term, trunc, info["current"]) == (1.0, True, False, 3)
    # Success is a positive *return*: -1 + 0 + 0 + 1 = 0 is not a success.
    assert env.episode_return == 0.0 and info["success"] is False
    assert info["action_valid"] is True


def test_numberline_clamps_at_both_ends():
    env = NumberLineEnv(max_position=5)
    env.reset(options={"target": 3, "current": 0})
    _, r, _, _, info = step_name(env, "-")
    assert (r, info["current"]) == (-1.0, 0)  # clamped: distance unchanged -> -1
    env.reset(options={"target": 2, "current": 5})
    _, r, _, _, info = step_name(env, "+")
    assert (r, info["current"]) == (-1.0, 5)


@pytest.mark.parametrize("max_position", [3, 5])
def test_numberline_truncates_after_two_max_position_steps(max_position):
    env = NumberLineEnv(max_position=max_position)
    env.reset(options={"target": max_position, "current": 0})
    for i in range(2 * max_position):
        _, r, term, trunc, info = step_name(env, "-")
        assert not term and r == -1.0
        assert trunc == (i == 2 * max_position - 1)
    assert info["success"] is False and env.episode_return == -2 * max_position


def test_numberline_verl_agent_profile_gives_zero_on_failure():
    env = NumberLineEnv(reward_profile="verl_agent")
    env.reset(options={"target": 3, "current": 0})
    assert step_name(env, "-")[1] == 0.0
    step_name(env, "+"), step_name(env, "+")
    assert step_name(env, "+")[1] == 1.0  # success reward kept


def test_numberline_success_only_at_end_and_oracle_always_wins():
    env = NumberLineEnv()
    for seed in range(100):
        _, info = env.reset(seed=seed)
        assert info["success"] is False
        done = False
        while not done:
            _, _, term, trunc, info = env.step(env.oracle_action())
            done = term or trunc
            assert info["success"] == (done and env.episode_return > 0)
        assert term and info["success"] and env.episode_return == 1.0
        assert env.oracle_action() is None


def test_numberline_image_shows_state():
    env = NumberLineEnv()
    a = env.reset(options={"target": 1, "current": 2})[0]
    b = env.reset(options={"target": 1, "current": 3})[0]
    c = env.reset(options={"target": 4, "current": 3})[0]
    assert not np.array_equal(a, b) and not np.array_equal(b, c)
    # Black text on a white background: high contrast.
    assert set(np.unique(a[..., 0])[[0, -1]]) == {0, 255}
    with pytest.raises(ValueError):
        NumberLineEnv(max_position=0)
