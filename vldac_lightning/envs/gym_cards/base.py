"""Common machinery of the four Gym-Cards environments.

Reward profiles:

- ``"rl4vlm"`` (default): RL4VLM's rewards, failures cost -1.
- ``"verl_agent"``: verl-agent's variant of the same games gives 0 instead of -1 on failure;
  the success rewards (+1 / +10) are unchanged.

Success is RL4VLM's definition: the episode ended with a positive return. The env tracks the
return itself so that ``info["success"]`` is right whatever wrapper sits on top.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from PIL import Image

from .render import CANVAS_SIZE, to_array

REWARD_PROFILES: dict[str, float] = {"rl4vlm": -1.0, "verl_agent": 0.0}  # profile -> failure reward

# Card ranks and their values; J/Q/K count 10 and an ace counts 1 (as in RL4VLM's prompts).
RANK_VALUES: dict[str, int] = {"A": 1, **{str(v): v for v in range(2, 11)}, "J": 10, "Q": 10, "K": 10}
ALL_RANKS: tuple[str, ...] = tuple(RANK_VALUES)

Card = tuple[str, int]  # (rank, suit index into render.SUITS)


def failure_reward(reward_profile: str) -> float:
    """The reward a failure earns under ``reward_profile``; ValueError for unknown profiles."""
    if reward_profile not in REWARD_PROFILES:
        raise ValueError(
            f"unknown reward_profile {reward_profile!r}; valid choices: {sorted(REWARD_PROFILES)}"
        )
    return REWARD_PROFILES[reward_profile]


def parse_card(card: str | Card) -> Card:
    """Accept ``"J"`` or ``("J", 2)`` (tests and fixtures inject hands this way)."""
    if isinstance(card, str):
        card = (card, 0)
    rank, suit = str(card[0]), int(card[1])
    if rank not in RANK_VALUES or not 0 <= suit < 4:
        raise ValueError(f"invalid card {card!r}; ranks are {ALL_RANKS}, suits 0..3")
    return rank, suit


class GymCardsEnv(gym.Env):
    """Base class: spaces, reward profile, episode-return bookkeeping and rendering glue.

    Subclasses define ``action_names`` and implement ``_new_episode``, ``_apply``, ``_state_info``
    and ``_draw``.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}
    action_names: tuple[str, ...] = ()

    def __init__(self, reward_profile: str = "rl4vlm", render_mode: str | None = None) -> None:
        self.fail_reward = failure_reward(reward_profile)
        self.reward_profile = reward_profile
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"unsupported render_mode {render_mode!r}; valid: {self.metadata['render_modes']}"
            )
        self.render_mode = render_mode
        self.observation_space = spaces.Box(0, 255, (CANVAS_SIZE, CANVAS_SIZE, 3), np.uint8)
        self.action_space = spaces.Discrete(len(self.action_names))
        self._obs: np.ndarray | None = None
        self._done = True
        self._return = 0.0

    # --- gymnasium API -------------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)  # seeds self.np_random; seed=None keeps the current stream
        self._new_episode(options or {})
        self._done = False
        self._return = 0.0
        self._obs = to_array(self._draw())
        return self._obs.copy(), self._info()

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self._done:
            # Stepping a finished episode is always a caller bug; fail loudly rather than invent a state.
            raise RuntimeError("episode is over (or reset() was never called): call reset() first")
        a = int(action)
        if not 0 <= a < len(self.action_names):
            raise ValueError(f"action {action!r} outside Discrete({len(self.action_names)})")
        reward, terminated, truncated, action_valid = self._apply(a)
        self._return += reward
        self._done = terminated or truncated
        self._obs = to_array(self._draw())
        info = self._info()
        info["action_valid"] = action_valid
        return self._obs.copy(), float(reward), terminated, truncated, info

    def render(self) -> np.ndarray | None:
        if self.render_mode == "rgb_array" and self._obs is not None:
            return self._obs.copy()
        return None

    # --- helpers ---------------------------------------------------------------------------
    @property
    def episode_return(self) -> float:
        return self._return

    @property
    def done(self) -> bool:
        return self._done

    def action_index(self, name: str) -> int:
        """Index of an action by its name (e.g. ``"+"``)."""
        return self.action_names.index(name)

    def _draw_card(self, ranks: tuple[str, ...] = ALL_RANKS) -> Card:
        """One card from an infinite deck of ``ranks``, using the env's seeded RNG."""
        rank = ranks[int(self.np_random.integers(len(ranks)))]
        return rank, int(self.np_random.integers(4))

    def _info(self) -> dict[str, Any]:
        info = self._state_info()
        # Success can only be True at episode end: positive return of a finished episode.
        info["success"] = bool(self._done and self._return > 0)
        return info

    def oracle_action(self) -> int | None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _new_episode(self, options: dict[str, Any]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _apply(self, action: int) -> tuple[float, bool, bool, bool]:  # pragma: no cover - abstract
        """Apply an action: (reward, terminated, truncated, action_valid)."""
        raise NotImplementedError

    def _state_info(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _draw(self) -> Image.Image:  # pragma: no cover - abstract
        raise NotImplementedError
