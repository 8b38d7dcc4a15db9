"""MiniWorld: the paper's four tasks headless, the −1 on unrewarded ends (through GAE), success, the
prompt's image history and action list, parsing, 4-worker pools and frames stored once per step."""

from __future__ import annotations

import functools
import json
import os
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

from tests.envs.miniworld_support import require_miniworld
from vldac_lightning.algo.advantages import compute_gae
from vldac_lightning.envs import EnvPool, LanguageEnv, make_language_env, train_seeds
from vldac_lightning.envs.miniworld import APT_PACKAGES, TASKS, MiniWorldNav
from vldac_lightning.envs.miniworld.headless import gl_error_message
from vldac_lightning.models.processor import build_messages
from vldac_lightning.rollout.collector import RolloutCollector

IDS = [f"miniworld/{task}-v0" for task in TASKS]
ONEROOM = "miniworld/OneRoom-v0"
MEANINGS = ("0: turn left", "1: turn right", "2: move forward", "3: move back")


def answer(action: object) -> str:
    return json.dumps({"thoughts": "x", "action": action})


def make(env_id: str = ONEROOM, **kwargs: object) -> LanguageEnv:
    require_miniworld()
    options = {"image_history": 4, "max_episode_steps": 128, **kwargs}
    return make_language_env(env_id, **options)


# --- without OpenGL ------------------------------------------------------------------------
def test_the_gl_error_says_what_to_install() -> None:
    msg = gl_error_message("Library 'EGL' not found")
    assert "EGL" in msg and all(pkg in msg for pkg in APT_PACKAGES) and "xvfb-run" in msg


def test_unknown_task_lists_the_tasks() -> None:
    with pytest.raises(ValueError, match="OneRoom.*Hallway.*FourRooms.*WallGap"):
        MiniWorldNav("Maze")


class _NeverRewarded(gym.Env):
    """Two actions, 8x8 black frames, reward 0 until the native limit ends the episode."""

    action_names = ("a", "b")
    action_space = spaces.Discrete(2)
    observation_space = spaces.Box(0, 255, (8, 8, 3), np.uint8)

    def __init__(self, native_limit: int = 100, reward_at_end: float = 0.0) -> None:
        self.native_limit, self.reward_at_end, self.t = native_limit, reward_at_end, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros((8, 8, 3), np.uint8), {}

    def step(self, action):
        self.t += 1
        end = self.t >= self.native_limit
        return np.zeros((8, 8, 3), np.uint8), self.reward_at_end if end else 0.0, end, False, {}


@pytest.mark.parametrize(
    "native_limit, max_steps, reward_at_end, want",
    [(100, 3, 0.0, -1.0), (2, 10, 0.0, -1.0), (2, 10, 0.5, 0.5), (100, 3, None, 0.0)],
    ids=["cut-by-time-limit", "native-termination", "rewarded-end", "penalty-off"],
)
def test_end_penalty_rule(native_limit: int, max_steps: int, reward_at_end: float | None, want: float) -> None:
    env = LanguageEnv(_NeverRewarded(native_limit, reward_at_end or 0.0), game="numberline", response_mode="action_only",
                      max_episode_steps=max_steps, end_penalty=None if reward_at_end is None else -1.0)
    env.reset(seed=0)
    rewards, done = [], False
    while not done:
        _, r, term, trunc, info = env.step("a")
        rewards.append(r)
        done = term or trunc
    assert rewards[:-1] == [0.0] * (len(rewards) - 1) and rewards[-1] == want
    assert info["success"] == (want > 0) and info["episode_return"] == want


# --- the real tasks, headless ----------------------------------------------------------------
@pytest.mark.parametrize("env_id", IDS)
def test_each_task_resets_and_steps_headless(env_id: str) -> None:
    env = make(env_id)
    try:
        assert os.environ.get("PYGLET_HEADLESS") == "true"
        seed = 0
        obs, info = env.reset(seed=seed)
        while info["goal_distance"] < 2.0:  # start away from the box, so five moves cannot reach it
            seed += 1
            obs, info = env.reset(seed=seed)
        assert obs["images"].shape == (4, 60, 80, 3) and obs["images"].dtype == np.uint8 and obs["num_images"] == 1
        assert obs["images"][0].std() > 0  # a rendered view, not a blank frame
        assert info["task"] in obs["text"] and "red box" in info["task"]
        first = obs["images"][0].copy()
        for action in (0, 0, 2, 3, 1):
            obs, reward, term, trunc, info = env.step(answer(action))
            assert info["parse_ok"] and info["action_valid"] and info["native_action"] == action
            assert reward == 0.0 and not (term or trunc)
        assert obs["num_images"] == 4
        assert not np.array_equal(obs["images"][3], first)  # turning changed the view
    finally:
        env.close()


def test_observation_size_is_configurable() -> None:
    env = make(env_kwargs={"obs_width": 112, "obs_height": 84}, image_history=2)
    try:
        obs, _ = env.reset(seed=0)
        assert obs["images"].shape == (2, 84, 112, 3)
    finally:
        env.close()


def test_time_limit_ends_with_minus_one_and_no_success() -> None:
    env = make(max_episode_steps=6)
    try:
        env.reset(seed=3)
        rewards = []
        for _ in range(6):  # turning in place never reaches the box
            _, r, term, trunc, info = env.step(answer(0))
            rewards.append(r)
        assert rewards == [0.0] * 5 + [-1.0] and trunc and not term
        assert info["success"] is False and info["episode_return"] == -1.0 and not info["goal_reached"]
    finally:
        env.close()


def test_reaching_the_box_is_success_with_the_native_reward() -> None:
    env = make()
    try:
        env.reset(seed=1)
        for _ in range(128):
            _, r, term, trunc, info = env.step(env.oracle_text())
            if term or trunc:
                break
        assert term and not trunc and info["goal_reached"] and info["step_count"] == info["episode_length"]
        assert r == pytest.approx(1 - 0.2 * info["step_count"] / 180)  # OneRoom's native step budget is 180
        assert info["success"] and info["episode_return"] == pytest.approx(r) and r > 0
    finally:
        env.close()


def test_prompt_shows_k_images_and_the_action_list() -> None:
    env = make()
    try:
        obs, _ = env.reset(seed=0)
        assert "1 image(s)" in obs["text"] and "previous 0 action(s)" in obs["text"]
        for t in range(1, 6):
            obs, *_ = env.step(answer(t % 4))
            k = min(t + 1, 4)
            assert obs["num_images"] == k and f"{k} image(s)" in obs["text"]
            assert f"previous {k - 1} action(s)" in obs["text"]
        assert all(m in obs["text"] for m in MEANINGS) and '"action"' in obs["text"]
        content = build_messages(obs["num_images"], obs["text"])[0]["content"]
        assert [c["type"] for c in content] == ["image"] * 4 + ["text"]
    finally:
        env.close()
    short = make(prompt_version="action_only", response_mode="action_only")
    try:
        obs, _ = short.reset(seed=0)
        assert '"0", "1", "2", "3"' in obs["text"] and "3 move back" in obs["text"]
    finally:
        short.close()


@pytest.mark.parametrize(
    "text, mode, native, valid",
    [
        (answer(2), "json", 2, True),
        (answer("1"), "json", 1, True),
        ('```json\n{"thoughts": "box ahead", "action": 3}\n```', "json", 3, True),
        (answer("move forward"), "json", None, False),  # numbers only: random fallback
        ("0", "action_only", 0, True),
        ("forward", "action_only", None, False),
    ],
)
def test_answers_parse_to_actions(text: str, mode: str, native: int | None, valid: bool) -> None:
    env = make(response_mode=mode, prompt_version="rl4vlm" if mode == "json" else "action_only")
    try:
        env.reset(seed=0)
        _, _, _, _, info = env.step(text)
        assert info["action_valid"] is valid
        if native is not None:
            assert info["native_action"] == native
        else:
            assert 0 <= info["native_action"] <= 3  # the configured policy: a random valid action
    finally:
        env.close()


# --- pools, rollouts -----------------------------------------------------------------------
def test_end_penalty_reaches_the_gae_targets() -> None:
    """Pool → collector → GAE: the −1 of time-limited episodes is in the rollout and in the targets."""
    require_miniworld()
    N, T, limit, gamma, lam = 2, 6, 4, 0.99, 0.95

    class TurnInPlace:  # a policy stand-in: always "turn left", one response token, V = 0
        def act(self, obs):
            n = len(obs)
            return SimpleNamespace(texts=[answer(0)] * n, response_ids=torch.ones(n, 1, dtype=torch.long),
                                   response_mask=torch.ones(n, 1, dtype=torch.bool), logprobs=torch.zeros(n, 1),
                                   ref_logprobs=torch.zeros(n, 1), values=torch.zeros(n))

        def value(self, obs):
            return torch.zeros(len(obs))

        def eval(self):
            return self

    thunk = functools.partial(make_language_env, ONEROOM, image_history=4, max_episode_steps=limit)
    with EnvPool([thunk] * N, mode="sync", seeds=train_seeds(0, N)) as pool:
        rollout, stats = RolloutCollector(pool, TurnInPlace(), T).collect()
    assert rollout.rewards[limit - 1].tolist() == [-1.0] * N and rollout.truncated[limit - 1].all()
    assert rollout.rewards.sum().item() == -1.0 * N
    assert [e.success for e in stats.episodes] == [False] * N
    _, returns = compute_gae(rollout.rewards, rollout.values, rollout.next_values, rollout.terminated,
                             rollout.truncated, gamma, lam)
    for t in range(limit):
        assert returns[t].tolist() == pytest.approx([-((gamma * lam) ** (limit - 1 - t))] * N)  # V = 0


def test_history_frames_are_stored_once_per_step() -> None:
    require_miniworld()
    thunk = functools.partial(make_language_env, ONEROOM, image_history=4, max_episode_steps=128)
    with EnvPool([thunk], mode="sync", seeds=[0]) as pool:
        seen = [pool.reset()[0]["images"]]
        for t in range(8):
            seen.append(pool.step([answer(t % 2)]).obs[0]["images"])
        assert pool._frames[0].frames_stored == len(seen)  # one new frame per step, none duplicated
    for before, after in zip(seen[3:], seen[4:]):
        assert after.shape == (4, 60, 80, 3) and not after.flags.writeable
        assert np.shares_memory(before, after) and np.array_equal(before[1:], after[:3])
        assert not np.array_equal(after[2], after[3])  # distinct frames (turns change the view), no aliasing


def test_a_four_worker_pool_runs_and_closes_cleanly() -> None:
    require_miniworld()
    import psutil

    thunk = functools.partial(make_language_env, ONEROOM, image_history=4, max_episode_steps=5)
    pool = EnvPool([thunk] * 4, mode="async", seeds=train_seeds(0, 4))
    workers = [psutil.Process(pid) for pid in pool.pids]
    try:
        obs = pool.reset()
        assert len(obs) == 4 and len({o["images"].tobytes() for o in obs}) == 4  # different episodes
        episodes = []
        for t in range(5):
            step = pool.step([answer(t % 4)] * 4)
            episodes += step.episodes
        assert len(episodes) == 4 and all(e.length == 5 and e.episode_return <= 0 for e in episodes)
        assert all(o["images"].shape == (1, 60, 80, 3) for o in step.obs)  # auto-reset: new episodes
    finally:
        pool.close()
    assert all(not w.is_running() or w.status() == psutil.STATUS_ZOMBIE for w in workers)
