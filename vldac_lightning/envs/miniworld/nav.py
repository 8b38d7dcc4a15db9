"""The paper's MiniWorld navigation tasks as native envs for :class:`~vldac_lightning.envs.LanguageEnv`.

:class:`MiniWorldNav` owns one Farama ``miniworld`` simulator and exposes what the language layer
needs: four discrete actions with names (docs/environments.md#miniworld: 0 turn left, 1 turn right, 2 move forward,
3 move back; the tasks' own action space stops at 2, but the simulator implements move back and
the paper's prompt offers it), RGB uint8 observations of a configurable size (rendered at that
size by miniworld itself, no resizing), the task text for the prompt and goal-relative state in
``info``.

The episode rules live in the language layer, shared with every env: the 128-step time limit is
``LanguageEnv(max_episode_steps=...)`` and the −1 on an unrewarded episode end is its
``end_penalty`` (the registry's default for MiniWorld ids), so both apply however the episode ends.
The native reward is miniworld's own, ``1 − 0.2·step_count/max_episode_steps`` with the task's
native step budget (180 OneRoom, 250 Hallway and FourRooms, 300 WallGap), as in the reference
code, which wraps the unchanged task in a 128-step time limit.
"""

from __future__ import annotations

import contextlib
import io
import math
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from .headless import MiniWorldUnavailable, gl_error_message, import_miniworld

__all__ = ["ACTION_MEANINGS", "TASKS", "MiniWorldNav"]

# Our id suffix -> (miniworld's gymnasium id, the task as the prompt states it).
TASKS: dict[str, tuple[str, str]] = {
    "OneRoom": ("MiniWorld-OneRoom-v0", "go to the red box, placed at random in one big room"),
    "Hallway": ("MiniWorld-Hallway-v0", "go to the red box at the end of the hallway"),
    "FourRooms": ("MiniWorld-FourRooms-v0", "go to the red box, somewhere in one of four connected rooms"),
    "WallGap": ("MiniWorld-WallGap-v0", "go to the red box behind the wall; pass through the gap in the wall"),
}
ACTION_MEANINGS = ("turn left", "turn right", "move forward", "move back")


def _make_simulator(sim_id: str, **kwargs: Any) -> gym.Env:
    import_miniworld()  # headless setup first; registers MiniWorld-* ids
    try:
        # miniworld prints "Falling back to num_samples=4" (MSAA) on stdout for every env: noise.
        with contextlib.redirect_stdout(io.StringIO()):
            return gym.make(sim_id, disable_env_checker=True, **kwargs)
    except MiniWorldUnavailable:
        raise
    except (ImportError, OSError) as e:
        raise MiniWorldUnavailable(gl_error_message(e)) from e
    except Exception as e:
        # pyglet's display/context errors (NoSuchDisplayException, ContextException, ...) have no
        # common base class; recognise them by module.
        if type(e).__module__.startswith("pyglet"):
            raise MiniWorldUnavailable(gl_error_message(f"{type(e).__name__}: {e}")) from e
        raise


class MiniWorldNav(gym.Env):
    """One MiniWorld "go to the red box" task (see the module docstring).

    ``obs_width`` / ``obs_height`` set the rendered observation (paper: 80×60); ``domain_rand``
    is miniworld's domain randomisation (off in the paper). ``info`` carries ``task`` (prompt
    text), ``goal_reached``, ``step_count``, ``goal_distance`` and ``goal_bearing`` (degrees,
    positive = to the left).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}  # MiniWorld's own frame rate
    action_names: tuple[str, ...] = tuple(str(i) for i in range(len(ACTION_MEANINGS)))
    action_meanings: tuple[str, ...] = ACTION_MEANINGS

    def __init__(
        self,
        task: str = "OneRoom",
        *,
        obs_width: int = 80,
        obs_height: int = 60,
        domain_rand: bool = False,
        render_mode: str | None = None,
    ) -> None:
        if task not in TASKS:
            raise ValueError(f"unknown MiniWorld task {task!r}; valid tasks: {list(TASKS)}")
        if int(obs_width) < 8 or int(obs_height) < 8:
            raise ValueError(f"obs_width and obs_height must be >= 8 pixels, got {obs_width}x{obs_height}")
        self.task = task
        self.sim_id, self.task_text = TASKS[task]
        self.render_mode = render_mode
        self.sim = _make_simulator(
            self.sim_id, obs_width=int(obs_width), obs_height=int(obs_height), domain_rand=bool(domain_rand),
            render_mode="rgb_array",
        )
        self.action_space = spaces.Discrete(len(ACTION_MEANINGS))
        self.observation_space = spaces.Box(0, 255, (int(obs_height), int(obs_width), 3), np.uint8)
        self._goal_reached = False

    # --- gymnasium API ---------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        obs, _ = self.sim.reset(seed=seed, options=options)
        self._goal_reached = False
        return np.asarray(obs, np.uint8), self._info()

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        if not self.action_space.contains(action):
            raise ValueError(f"action {action!r} is not in {self.action_space}")
        obs, reward, terminated, truncated, _ = self.sim.step(int(action))
        reward = float(reward)
        # The tasks terminate exactly when the agent reaches the box, with a positive reward.
        self._goal_reached = bool(terminated) and reward > 0
        return np.asarray(obs, np.uint8), reward, bool(terminated), bool(truncated), self._info()

    def render(self) -> np.ndarray:
        """The agent's view (``rgb_array``)."""
        return self.sim.unwrapped.render_obs()

    def close(self) -> None:
        self.sim.close()

    # --- state -----------------------------------------------------------------------------
    def _goal(self) -> tuple[float, float]:
        """(distance, bearing in degrees, positive = counter-clockwise = to the agent's left)."""
        world = self.sim.unwrapped
        delta = world.box.pos - world.agent.pos
        # miniworld's convention: dir_vec = (cos θ, 0, −sin θ), positive θ turns left.
        target = math.atan2(-delta[2], delta[0])
        bearing = (target - world.agent.dir + math.pi) % (2 * math.pi) - math.pi
        return float(np.hypot(delta[0], delta[2])), math.degrees(bearing)

    def _info(self) -> dict[str, Any]:
        distance, bearing = self._goal()
        return {
            "task": self.task_text,
            "goal_reached": self._goal_reached,
            "step_count": int(self.sim.unwrapped.step_count),
            "goal_distance": round(distance, 3),
            "goal_bearing": round(bearing, 1),
        }

    def oracle_action(self) -> int:
        """A greedy expert: face the box (turns of miniworld's step), then walk to it.

        Walls are ignored, so it solves OneRoom and Hallway but can get stuck in FourRooms and
        WallGap; it exists for tests and as a sanity baseline.
        """
        _, bearing = self._goal()
        half_turn = 0.5 * float(self.sim.unwrapped.params.get_max("turn_step"))
        if abs(bearing) <= half_turn:
            return 2
        return 0 if bearing > 0 else 1
