"""LanguageEnv (the text protocol), prompts and the env registry."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from tests.envs.miniworld_support import require_miniworld
from vldac_lightning.envs import (
    ENV_IDS,
    LanguageEnv,
    available_prompts,
    load_prompt,
    make_language_env,
    parse_action,
)


class FakeLineEnv(gym.Env):
    """A tiny NumberLine: 4x4 images encoding (current, target, step); a clamped move is illegal."""

    action_names = ("-", "+")

    def __init__(self, size: int = 5, with_success: bool = True, with_oracle: bool = True) -> None:
        self.size, self.with_success, self.with_oracle = size, with_success, with_oracle
        self.observation_space = spaces.Box(0, 255, (4, 4, 3), np.uint8)
        self.action_space = spaces.Discrete(2)
        self.steps_taken: list[int] = []

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.target, self.current = (int(x) for x in self.np_random.choice(self.size + 1, 2, replace=False))
        self.t, self.ret = 0, 0.0
        return self._obs(), self._info(False)

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.steps_taken.append(int(action))
        before = abs(self.current - self.target)
        moved = min(max(self.current + (1 if action == 1 else -1), 0), self.size)
        legal = moved != self.current
        self.current, self.t = moved, self.t + 1
        done = self.current == self.target
        reward = 1.0 if done else (0.0 if abs(self.current - self.target) < before else -1.0)
        self.ret += reward
        info = self._info(done)
        info["action_valid"] = legal
        return self._obs(), reward, done, False, info

    def oracle_action(self) -> int | None:
        return int(self.target > self.current) if self.with_oracle else None

    def _obs(self) -> np.ndarray:
        img = np.zeros((4, 4, 3), np.uint8)
        img[..., 0], img[..., 1], img[..., 2] = self.current, self.target, self.t
        return img

    def _info(self, done: bool) -> dict[str, Any]:
        info: dict[str, Any] = {"target": self.target, "current": self.current, "max_position": self.size}
        if self.with_success:
            info["success"] = bool(done and self.ret > 0)
        return info


def make_fake(**kwargs: Any) -> LanguageEnv:
    native_kwargs = {k: kwargs.pop(k) for k in ("with_success", "with_oracle") if k in kwargs}
    return LanguageEnv(FakeLineEnv(**native_kwargs), game="numberline", **kwargs)


def answer(a: str) -> str:
    return json.dumps({"thoughts": "x", "action": a})


def test_spaces_and_reset_observation() -> None:
    env = make_fake(image_history=3)
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert obs["images"].shape == (3, 4, 4, 3) and obs["num_images"] == 1
    assert not obs["images"][1:].any()  # zero padding at the end
    assert isinstance(env.action_space, spaces.Text)
    assert env.action_names == ("-", "+")
    assert info["parse_ok"] and info["native_action"] == -1 and info["episode_length"] == 0
    assert {"target", "current", "max_position", "success", "episode_return"} <= set(info)


def test_valid_step_maps_to_native_action() -> None:
    env = make_fake()
    _, info0 = env.reset(seed=1)
    _, reward, _, _, info = env.step(answer("+"))
    assert info["native_action"] == 1 and env.unwrapped.steps_taken == [1]
    assert info["parse_ok"] and info["episode_length"] == 1
    assert info["current"] == min(info0["current"] + 1, 5)
    assert info["episode_return"] == reward


def test_image_history_keeps_latest_frames_oldest_first() -> None:
    env = make_fake(image_history=3)
    env.reset(seed=2)
    env.step(answer("+"))
    obs, *_ = env.step(answer("-"))
    assert obs["num_images"] == 3 and list(obs["images"][:, 0, 0, 2]) == [0, 1, 2]
    for _ in range(2):
        obs, _, term, trunc, _ = env.step(answer("-"))
        if term or trunc:
            return
    assert list(obs["images"][:, 0, 0, 2]) == [2, 3, 4]


def test_random_policy_on_parse_failure_is_seeded() -> None:
    def run() -> list[int]:
        env = make_fake(max_episode_steps=100)
        env.reset(seed=3)
        acts = []
        for _ in range(12):
            _, _, term, trunc, info = env.step("no json here")
            assert not info["parse_ok"] and not info["action_valid"]
            acts.append(info["native_action"])
            if term or trunc:
                env.reset()
        return acts

    a, b = run(), run()
    assert a == b and set(a) == {0, 1}


def test_invalid_value_also_falls_back() -> None:
    env = make_fake()
    env.reset(seed=4)
    *_, info = env.step(answer("plus"))
    assert info["parse_ok"] and not info["action_valid"] and info["native_action"] in (0, 1)


def test_penalty_policy_does_not_step_and_counts_steps() -> None:
    env = make_fake(parse_failure="penalty", parse_failure_penalty=-0.5, max_episode_steps=3)
    obs0, _ = env.reset(seed=5)
    obs, reward, term, trunc, info = env.step("???")
    assert reward == -0.5 and not term and not trunc
    assert info["native_action"] == -1 and env.unwrapped.steps_taken == []
    assert obs["text"] == obs0["text"] and np.array_equal(obs["images"], obs0["images"])
    env.step("???")
    _, _, term, trunc, info = env.step("???")
    assert trunc and not term and info["episode_return"] == -1.5 and info["episode_length"] == 3


def test_native_action_valid_false_is_reported() -> None:
    env = make_fake()
    env.reset(seed=6)
    env.unwrapped.current, env.unwrapped.target = 0, 3  # "-" at 0 is a clamped, illegal move
    _, _, _, _, info = env.step(answer("-"))
    assert info["parse_ok"] and not info["action_valid"] and info["native_action"] == 0


def test_time_limit_truncates() -> None:
    env = make_fake(max_episode_steps=2)
    _, info = env.reset(seed=7)
    away = "-" if info["target"] > info["current"] else "+"
    _, _, term, trunc, _ = env.step(answer(away))
    assert not term and not trunc
    _, _, term, trunc, info = env.step(answer(away))
    assert trunc and not term and not info["success"]


@pytest.mark.parametrize("with_success", [True, False])
def test_success_at_episode_end(with_success: bool) -> None:
    env = make_fake(with_success=with_success, max_episode_steps=50)
    env.reset(seed=8)
    for _ in range(50):
        _, _, term, trunc, info = env.step(env.oracle_text())
        if term or trunc:
            break
    assert term and info["success"] and info["episode_return"] == 1.0


def test_oracle_text_modes() -> None:
    env = make_fake()
    _, info = env.reset(seed=9)
    expected = "+" if info["target"] > info["current"] else "-"
    assert parse_action(env.oracle_text(), env.action_names).action == expected
    env2 = make_fake(response_mode="action_only", prompt_version="action_only")
    env2.reset(seed=9)
    assert env2.oracle_text() == expected
    env3 = make_fake(with_oracle=False)
    env3.reset(seed=9)
    assert env3.oracle_text() is None


def test_action_only_response_mode() -> None:
    env = make_fake(response_mode="action_only", prompt_version="action_only")
    obs, _ = env.reset(seed=10)
    assert "only one of" in obs["text"]
    *_, info = env.step(" + ")
    assert info["parse_ok"] and info["action_valid"] and info["native_action"] == 1
    *_, info = env.step(answer("+"))
    assert not info["action_valid"]


def test_state_in_text() -> None:
    obs, info = make_fake().reset(seed=11)
    assert "Target:" not in obs["text"]
    line = f"Target: {info['target']}. Current: {info['current']}."
    assert make_fake(state_in_text=True).reset(seed=11)[0]["text"].endswith(line)
    assert make_fake(prompt_version="action_only_state").reset(seed=11)[0]["text"].endswith(line)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"parse_failure": "skip"}, "random"),
        ({"response_mode": "xml"}, "action_only"),
        ({"prompt_version": "v9"}, "rl4vlm"),
        ({"image_history": 0}, "image_history"),
        ({"max_episode_steps": 0}, "max_episode_steps"),
    ],
)
def test_option_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_fake(**kwargs)


def test_native_env_contract_checked() -> None:
    env = gym.make("CartPole-v1")
    with pytest.raises(TypeError):
        LanguageEnv(env, game="numberline")


# --- prompts -------------------------------------------------------------------------------
def test_prompt_catalogue() -> None:
    catalogue = available_prompts()
    for game in ("numberline", "ezpoints", "points24", "blackjack"):
        assert {"rl4vlm", "action_only"} <= set(catalogue[game])
    with pytest.raises(ValueError, match="numberline"):
        load_prompt("chess", "rl4vlm")
    with pytest.raises(ValueError, match="action_only"):
        load_prompt("numberline", "nope")


def test_prompt_missing_field_is_clear() -> None:
    with pytest.raises(ValueError, match="formula"):
        load_prompt("ezpoints", "rl4vlm").format({"target": 12}, 1, ("+",))


# --- registry and the real Gym-Cards envs ---------------------------------------------------
def test_registry_errors_and_spec() -> None:
    with pytest.raises(ValueError, match="gym_cards/NumberLine-v0"):
        make_language_env("gym_cards/Nope-v0")
    env = make_language_env(
        {"env_id": "gym_cards/NumberLine-v0", "env_kwargs": {"max_position": 3}, "max_episode_steps": 4}
    )
    _, info = env.reset(seed=0)
    assert info["max_position"] == 3 and env.max_episode_steps == 4 and env.game == "numberline"


def test_registry_import_is_light() -> None:
    code = "import sys, vldac_lightning.envs.registry; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


EXPECTED_WORDS = {
    "gym_cards/NumberLine-v0": '"-", "+"',
    "gym_cards/EZPoints-v0": "evaluates to 12",
    "gym_cards/Points24-v0": "evaluates to 24",
    "gym_cards/Blackjack-v0": '"stand", "hit"',
    **{f"miniworld/{task}-v0": "3: move back" for task in ("OneRoom", "Hallway", "FourRooms", "WallGap")},
}


@pytest.mark.parametrize("env_id", [e for e in ENV_IDS if e.startswith("gym_cards/")])  # ALFWorld: tests/envs/alfworld
@pytest.mark.parametrize("version", ["rl4vlm", "action_only"])
def test_real_envs_with_oracle(env_id: str, version: str) -> None:
    if env_id.startswith("miniworld/"):
        require_miniworld()
    mode = "json" if version == "rl4vlm" else "action_only"
    env = make_language_env(env_id, prompt_version=version, response_mode=mode, state_in_text=True)
    obs, _ = env.reset(seed=123)
    assert env.observation_space.contains(obs)
    if version == "rl4vlm":
        assert EXPECTED_WORDS[env_id] in obs["text"] and '"thoughts"' in obs["text"]
    for _ in range(env.max_episode_steps):
        text = env.oracle_text()
        if text is None:  # Points24 deals can be unsolvable: the oracle has no move, so give up
            assert env_id == "gym_cards/Points24-v0"
            text = answer("=") if mode == "json" else "="
        obs, _, term, trunc, info = env.step(text)
        assert info["parse_ok"] and info["action_valid"]
        assert env.observation_space.contains(obs)
        if term or trunc:
            break
    assert term or trunc
    if env_id in ("gym_cards/NumberLine-v0", "gym_cards/EZPoints-v0"):  # always solvable
        assert info["success"] and info["episode_return"] > 0
    assert info["success"] == (info["episode_return"] > 0)


def test_real_env_same_seed_same_episode() -> None:
    def run() -> list[tuple[str, float]]:
        env = make_language_env("gym_cards/Blackjack-v0")
        obs, _ = env.reset(seed=42)
        out = [(obs["text"], 0.0)]
        for t in ("hit", "junk", "stand"):
            obs, r, term, trunc, _ = env.step(answer(t))
            out.append((obs["text"], r))
            if term or trunc:
                break
        return out

    assert run() == run()
