"""``LanguageEnv``: the protocol every environment speaks (docs/environments.md#the-protocol).

Observation = the last ``image_history`` frames + a text prompt; action = the raw generated text,
parsed here into the native discrete action. The native env is any ``gymnasium.Env`` with a
``Discrete`` action space, an ``action_names`` tuple, RGB uint8 observations and state keys in
``info`` (optionally ``success``, ``action_valid`` and an ``oracle_action()`` method).
"""

from __future__ import annotations

import json
import string
from collections import deque
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from .parsing import parse_action
from .prompts import load_prompt

__all__ = [
    "PARSE_FAILURE_POLICIES", "RESPONSE_MODES", "TEXT_CHARSET", "TEXT_MAX_LENGTH", "LanguageEnv", "fresh_observation",
]

PARSE_FAILURE_POLICIES = ("random", "penalty")
RESPONSE_MODES = ("json", "action_only")
TEXT_MAX_LENGTH = 16_384


def _charset() -> str:
    # Printable ASCII + whitespace, Latin-1/Latin Extended-A, general punctuation, arrows, math
    # operators and card suits: everything our prompts (and models' answers) realistically hold.
    # The space is descriptive; the wrapper never rejects text for an unusual character.
    ranges = [(0xA0, 0x17F), (0x2000, 0x206F), (0x2190, 0x21FF), (0x2200, 0x22FF), (0x2660, 0x2667)]
    chars = set(string.printable) | {"\u00d7", "\u00f7", "\uff0b", "\uff0d"}
    for lo, hi in ranges:
        chars.update(chr(c) for c in range(lo, hi + 1))
    return "".join(sorted(chars))


TEXT_CHARSET = _charset()

# Keys this wrapper writes into info; the native env's keys of the same name are overridden.
_WRAPPER_KEYS = ("parse_ok", "action_valid", "native_action", "success", "episode_return", "episode_length")


def check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    """Raise a ValueError naming the option and its valid choices (shared by every language env)."""
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not valid; choose one of {list(choices)}")


def fresh_observation(obs: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``obs`` sharing no array with it: an unchanged observation returned again must still
    be a new object (callers keep and may edit what they get back)."""
    return {**obs, "images": obs["images"].copy()}


def language_spaces(image_history: int, height: int, width: int) -> tuple[spaces.Dict, spaces.Text]:
    """The observation and action spaces every language env shares (docs/environments.md#the-protocol):
    ``images`` (the last ``image_history`` frames, zero-padded), ``num_images`` (how many are real),
    ``text`` (the prompt); the action is the generated text."""
    k = image_history
    observation = spaces.Dict({
        "images": spaces.Box(0, 255, (k, height, width, 3), np.uint8),
        "num_images": spaces.Discrete(k + 1),
        "text": spaces.Text(max_length=TEXT_MAX_LENGTH, min_length=0, charset=TEXT_CHARSET),
    })
    return observation, spaces.Text(max_length=TEXT_MAX_LENGTH, min_length=0, charset=TEXT_CHARSET)


class LanguageEnv(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Wrap a native env so it reads/writes text (see the module docstring).

    ``parse_failure`` decides what an unparseable or invalid answer does: ``"random"`` steps the
    env with a uniformly random valid action (the reference behaviour of RL4VLM's gym-cards and
    MiniWorld), ``"penalty"`` does not step the env and returns ``parse_failure_penalty`` with the
    observation unchanged; both count toward ``max_episode_steps``. The random action comes from a
    generator of its own, seeded from ``reset(seed=...)``, so that parse failures do not shift the
    native env's RNG stream (card deals stay comparable across policies on the same seed).

    ``end_penalty`` (None = off; MiniWorld: −1) is the reward of the step that ends an episode —
    terminated, truncated by the native env or cut at ``max_episode_steps`` — when that step
    earned no positive reward (``min(reward, end_penalty)``, as the reference code's "done and
    reward <= 0 -> -1"). It is an ordinary reward, so it reaches the GAE targets.

    Like gymnasium's own wrappers it records its constructor arguments, so ``env.spec`` can
    rebuild it (``gymnasium.utils.env_checker.check_env`` does). Every ``reset``/``step`` returns
    a new observation: a caller that keeps or edits one never changes another.
    """

    def __init__(
        self,
        env: gym.Env,
        *,
        game: str,
        prompt_version: str = "rl4vlm",
        image_history: int = 1,
        max_episode_steps: int = 20,
        parse_failure: str = "random",
        parse_failure_penalty: float = -1.0,
        response_mode: str = "json",
        state_in_text: bool = False,
        end_penalty: float | None = None,
    ) -> None:
        gym.utils.RecordConstructorArgs.__init__(
            self, game=game, prompt_version=prompt_version, image_history=image_history,
            max_episode_steps=max_episode_steps, parse_failure=parse_failure,
            parse_failure_penalty=parse_failure_penalty, response_mode=response_mode,
            state_in_text=state_in_text, end_penalty=end_penalty,
        )
        gym.Wrapper.__init__(self, env)
        check_choice("parse_failure", parse_failure, PARSE_FAILURE_POLICIES)
        check_choice("response_mode", response_mode, RESPONSE_MODES)
        if image_history < 1:
            raise ValueError(f"image_history must be >= 1, got {image_history}")
        if max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps}")
        native = env.unwrapped
        names = tuple(getattr(native, "action_names", ()))
        if not isinstance(env.action_space, spaces.Discrete) or len(names) != int(env.action_space.n):
            raise TypeError(
                f"native env needs a Discrete action space and one action_names entry per action; "
                f"got {env.action_space} and action_names={names}"
            )
        obs_space = env.observation_space
        if not (isinstance(obs_space, spaces.Box) and len(obs_space.shape) == 3 and obs_space.shape[2] == 3):
            raise TypeError(f"native observations must be RGB images (H, W, 3); got {obs_space}")
        self.action_names: tuple[str, ...] = names
        self._action_index = {n: i for i, n in enumerate(names)}
        self.game = game
        self.prompt = load_prompt(game, prompt_version)
        self.image_history = int(image_history)
        self.max_episode_steps = int(max_episode_steps)
        self.parse_failure = parse_failure
        self.parse_failure_penalty = float(parse_failure_penalty)
        self.response_mode = response_mode
        self.state_in_text = bool(state_in_text)
        self.end_penalty = None if end_penalty is None else float(end_penalty)
        self._parse_mode = "json" if response_mode == "json" else "action_only"

        h, w, _ = obs_space.shape
        k = self.image_history
        self.observation_space, self.action_space = language_spaces(k, h, w)

        self._frames: deque[np.ndarray] = deque(maxlen=k)
        self._blank = np.zeros((h, w, 3), np.uint8)
        self._fallback_rng = np.random.default_rng()
        self._native_info: dict[str, Any] = {}
        self._obs: dict[str, Any] | None = None
        self._steps = 0
        self._return = 0.0

    # --- gymnasium API ---------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict, dict]:
        obs, native_info = self.env.reset(seed=seed, options=options)
        if seed is not None:
            # Derived, not equal, so the fallback stream differs from the native env's own stream.
            self._fallback_rng = np.random.default_rng([int(seed), 0x5EED])
        self._frames.clear()
        self._frames.append(np.asarray(obs, dtype=np.uint8))
        self._native_info = dict(native_info)
        self._steps = 0
        self._return = 0.0
        self._obs = self._make_obs()
        info = self._info(parse_ok=True, action_valid=True, native_action=-1, done=False)
        return self._obs, info

    def step(self, action: str) -> tuple[dict, float, bool, bool, dict]:
        if self._obs is None:
            raise RuntimeError("call reset() before step()")
        result = parse_action(action, self.action_names, mode=self._parse_mode)
        ok = result.parse_ok and result.action_valid
        terminated = truncated = False
        if ok or self.parse_failure == "random":
            index = (
                self._action_index[result.action]
                if ok
                else int(self._fallback_rng.integers(len(self.action_names)))
            )
            obs, reward, terminated, truncated, native_info = self.env.step(index)
            self._frames.append(np.asarray(obs, dtype=np.uint8))
            self._native_info = dict(native_info)
            self._obs = self._make_obs()
            native_valid = bool(native_info.get("action_valid", True))
            reward = float(reward)
        else:  # "penalty": no env step, observation unchanged (but a new object)
            index, native_valid, reward = -1, True, self.parse_failure_penalty
            self._obs = fresh_observation(self._obs)
        self._steps += 1
        terminated, truncated = bool(terminated), bool(truncated)
        if not terminated and self._steps >= self.max_episode_steps:
            truncated = True
        if self.end_penalty is not None and (terminated or truncated) and reward <= 0:
            reward = min(reward, self.end_penalty)
        self._return += reward
        info = self._info(
            parse_ok=result.parse_ok,
            action_valid=ok and native_valid,
            native_action=index,
            done=terminated or truncated,
        )
        return self._obs, reward, terminated, truncated, info

    # --- helpers ---------------------------------------------------------------------------
    def _make_obs(self) -> dict[str, Any]:
        n = len(self._frames)
        if self.image_history == 1:
            images = self._frames[0][None]  # a view: no copy for the common case
        else:
            images = np.stack([*self._frames, *([self._blank] * (self.image_history - n))])
        text = self.prompt.format(self._native_info, n, self.action_names, state_in_text=self.state_in_text)
        return {"images": images, "num_images": n, "text": text}

    def _info(self, *, parse_ok: bool, action_valid: bool, native_action: int, done: bool) -> dict[str, Any]:
        info = {k: v for k, v in self._native_info.items() if k not in _WRAPPER_KEYS}
        if done:
            # The native env's verdict when it has one, else RL4VLM's definition (positive return).
            native_success = self._native_info.get("success")
            success = bool(native_success) if native_success is not None else self._return > 0
        else:
            success = bool(self._native_info.get("success", False))
        info.update(
            parse_ok=bool(parse_ok),
            action_valid=bool(action_valid),
            native_action=int(native_action),
            success=success,
            episode_return=float(self._return),
            episode_length=int(self._steps),
        )
        return info

    def oracle_text(self) -> str | None:
        """The native oracle's action as a valid answer in this env's response mode (None if the
        native env has no oracle or it has no move)."""
        oracle = getattr(self.env.unwrapped, "oracle_action", None)
        if oracle is None:
            return None
        try:
            index = oracle()
        except NotImplementedError:
            return None
        if index is None:
            return None
        name = self.action_names[int(index)]
        if self.response_mode == "action_only":
            return name
        return json.dumps({"thoughts": "Following the oracle's move.", "action": name}, ensure_ascii=False)

    @property
    def episode_return(self) -> float:
        return self._return

    @property
    def episode_length(self) -> int:
        return self._steps
