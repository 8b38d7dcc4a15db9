"""``AlfworldEnv``: ALFWorld (TextWorld engine) speaking the language-env protocol (docs/environments.md#alfworld).

Observation ``{"images": uint8 [k, H, W, 3], "num_images": int, "text": str}`` like
:class:`~vldac_lightning.envs.language.LanguageEnv`; the action is the raw generated text.
ALFWorld's admissible commands change every step, so this env does not wrap a fixed
``Discrete`` native env:

* ``response_mode="json"`` (real VLMs): ``{"thoughts": ..., "action": "<command>"}``; the action
  must be one of the current admissible commands (parsed with :func:`parse_action`, so code
  fences, trailing text and case are tolerated).
* ``response_mode="action_only"`` (constrained decoding): the prompt numbers the admissible
  commands and the answer is a number; ``action_names`` is the FIXED set ``"1".."max_choices"``
  the policy builds its token trie from once. A number past the current list is inadmissible.

An unparseable or inadmissible answer costs ``parse_failure_penalty`` (−1) and, with
``parse_failure="penalty"`` (the default, RL4VLM's ALFWorld behaviour), leaves the game
unchanged; ``"random"`` plays a random admissible command instead. Reward per step
(RL4VLM style): ``reward_won · won + goal-condition term − 1 · invalid``, where the
goal-condition term is the fraction of ALFRED goal conditions satisfied now (``gc_reward="level"``)
or its change since the last step (``"delta"``). Episodes end when the game is won; they are
truncated at ``max_episode_steps`` (50).

Which game a reset plays: seeds below ``1e9`` (the pool's training seeds) index the train split,
seeds from ``1e9`` (the pool's evaluation seeds, ``envs.pool.eval_seeds``) the eval split; game =
``seed % split size``. ``source="generated"`` builds games offline (:mod:`.generator`, cached
under ``cache_dir``); ``"official"`` reads the official dataset under ``data_dir`` (default
``$ALFWORLD_DATA``); ``"auto"`` picks official when that directory holds ``json_2.1.1/``.
"""

from __future__ import annotations

import json
import os
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from ..language import (
    PARSE_FAILURE_POLICIES,
    RESPONSE_MODES,
    check_choice,
    fresh_observation,
    language_spaces,
)
from ..parsing import parse_action
from ..prompts import load_prompt
from .generator import SPLITS, TASK_TYPES, _ensure_alfworld_data

__all__ = ["DEFAULT_SPLIT_SIZES", "EVAL_SEED_OFFSET", "AlfworldEnv"]

# ALFWorld's official split sizes (solvable TextWorld games of json_2.1.1); generated splits
# default to the same sizes (games are generated lazily, on first use).
DEFAULT_SPLIT_SIZES = {"train": 3553, "valid_seen": 140, "valid_unseen": 134}
EVAL_SEED_OFFSET = 1_000_000_000  # == envs.pool._EVAL_OFFSET
SOURCES = ("auto", "generated", "official")
GC_REWARDS = ("level", "delta")


class AlfworldEnv(gym.Env):
    """ALFWorld as a language env (see the module docstring)."""

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(
        self,
        *,
        source: str = "auto",
        data_dir: str | None = None,
        cache_dir: str | None = None,
        train_split: str = "train",
        eval_split: str = "valid_unseen",
        split_sizes: Mapping[str, int] | None = None,
        task_types: Sequence[str] | None = None,
        image_size: int = 128,
        max_choices: int = 50,
        reward_won: float = 50.0,
        gc_reward: str = "level",
        prompt_version: str = "rl4vlm",
        image_history: int = 1,
        max_episode_steps: int = 50,
        parse_failure: str = "penalty",
        parse_failure_penalty: float = -1.0,
        response_mode: str = "json",
        state_in_text: bool = False,
    ) -> None:
        super().__init__()
        check_choice("source", source, SOURCES)
        check_choice("train_split", train_split, SPLITS)
        check_choice("eval_split", eval_split, SPLITS)
        check_choice("gc_reward", gc_reward, GC_REWARDS)
        check_choice("parse_failure", parse_failure, PARSE_FAILURE_POLICIES)
        check_choice("response_mode", response_mode, RESPONSE_MODES)
        task_types = tuple(task_types or TASK_TYPES)
        bad = [t for t in task_types if t not in TASK_TYPES]
        if bad:
            raise ValueError(f"task_types {bad} are not valid; choose from {list(TASK_TYPES)}")
        for name, value, lo in (("image_history", image_history, 1), ("max_episode_steps", max_episode_steps, 1),
                                ("max_choices", max_choices, 1), ("image_size", image_size, 32)):
            if int(value) < lo:
                raise ValueError(f"{name} must be >= {lo}, got {value}")
        _ensure_alfworld_data()
        data_dir = data_dir or os.environ.get("ALFWORLD_DATA")
        from .games import GeneratedGames, OfficialGames, has_official_data

        if source == "auto":
            source = "official" if has_official_data(data_dir) else "generated"
        self.source = source
        sizes = {**DEFAULT_SPLIT_SIZES, **dict(split_sizes or {})}
        if source == "official":
            if data_dir is None:
                raise ValueError("source=official needs data_dir or $ALFWORLD_DATA (the folder holding json_2.1.1/)")
            self._games = {s: OfficialGames(data_dir, s, task_types) for s in {train_split, eval_split}}
        else:
            root = Path(cache_dir or Path(os.environ["ALFWORLD_DATA"]) / "generated")
            self._games = {s: GeneratedGames(root, s, int(sizes[s]), task_types) for s in {train_split, eval_split}}
        self.train_split, self.eval_split = train_split, eval_split
        self.task_types = task_types
        self.image_size = int(image_size)
        self.max_choices = int(max_choices)
        self.reward_won = float(reward_won)
        self.gc_reward = gc_reward
        self.prompt = load_prompt("alfworld", prompt_version)
        self.image_history = int(image_history)
        self.max_episode_steps = int(max_episode_steps)
        self.parse_failure = parse_failure
        self.parse_failure_penalty = float(parse_failure_penalty)
        self.response_mode = response_mode
        self.state_in_text = bool(state_in_text)
        # The policy's constrained decoding reads this once (EnvPool.action_names): the answer
        # alphabet, not the (changing) commands. JSON mode ignores it.
        self.action_names: tuple[str, ...] = tuple(str(i) for i in range(1, self.max_choices + 1))

        s, k = self.image_size, self.image_history
        self.observation_space, self.action_space = language_spaces(k, s, s)

        from .engine import AlfredEngine

        self._engine = AlfredEngine()
        self._frames: deque[np.ndarray] = deque(maxlen=k)
        self._blank = np.zeros((s, s, 3), np.uint8)
        self._state: Any = None
        self._obs: dict[str, Any] | None = None
        self._game: Any = None
        self._split = train_split
        self._rng = np.random.default_rng()
        self._steps = 0
        self._return = 0.0
        self._gc = 0.0

    # --- gymnasium API ---------------------------------------------------------------------
    def split_of(self, seed: int) -> str:
        """The split a reset seed draws its game from (training vs evaluation seed range)."""
        return self.eval_split if seed >= EVAL_SEED_OFFSET else self.train_split

    def split_size(self, split: str) -> int:
        return len(self._games[split])

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        if seed is not None:
            self._rng = np.random.default_rng([int(seed), 0xA1F])
            self._split = self.split_of(int(seed))
            index = int(seed) % EVAL_SEED_OFFSET
        else:  # auto-reset inside a pool: the next game of the seeded stream
            index = int(self._rng.integers(2**31))
        if options and "game_index" in options:
            index = int(options["game_index"])
        self._game = self._games[self._split].get(index)
        self._engine.load(self._game.path)
        self._state = self._engine.reset()
        self._frames.clear()
        self._frames.append(self._render())
        self._steps, self._return = 0, 0.0
        self._gc = self._state.goal_condition_rate
        self._obs = self._make_obs()
        return self._obs, self._info(parse_ok=True, action_valid=True, done=False)

    def step(self, action: str) -> tuple[dict, float, bool, bool, dict]:
        if self._obs is None or self._state is None:
            raise RuntimeError("call reset() before step()")
        command, parse_ok = self._parse(action)
        valid = command is not None
        if not valid and self.parse_failure == "random":
            command = str(self._rng.choice(self._state.admissible_commands))
        if command is not None:
            self._state = self._engine.step(command)
            self._frames.append(self._render())
            self._obs = self._make_obs()
        else:  # the game is unchanged, the observation a new object all the same
            self._obs = fresh_observation(self._obs)
        gc = self._state.goal_condition_rate
        gc_term = gc if self.gc_reward == "level" else gc - self._gc
        self._gc = gc
        won = bool(self._state.won)
        reward = self.reward_won * won + gc_term + (0.0 if valid else self.parse_failure_penalty)
        self._steps += 1
        self._return += reward
        terminated = won
        truncated = not terminated and self._steps >= self.max_episode_steps
        info = self._info(parse_ok=parse_ok, action_valid=valid, done=terminated or truncated)
        return self._obs, float(reward), terminated, truncated, info

    def close(self) -> None:
        engine = getattr(self, "_engine", None)
        if engine is not None:
            engine.close()
            self._engine = None
        super().close()

    def render(self) -> np.ndarray:
        return self._frames[-1] if self._frames else self._blank

    # --- helpers ---------------------------------------------------------------------------
    @property
    def admissible_commands(self) -> list[str]:
        return list(self._state.admissible_commands) if self._state is not None else []

    def _shown_commands(self) -> list[str]:
        return self.admissible_commands[: self.max_choices]

    def _parse(self, text: str) -> tuple[str | None, bool]:
        """(admissible command or None, parse_ok)."""
        if self.response_mode == "json":
            result = parse_action(text, self.admissible_commands, mode="json")
        else:
            result = parse_action(text, self.action_names, mode="action_only")
            if result.parse_ok and result.action_valid:
                shown = self._shown_commands()
                i = int(result.action) - 1
                return (shown[i] if i < len(shown) else None), True
        return (result.action if result.action_valid else None), result.parse_ok

    def _render(self) -> np.ndarray:
        from .render import render_state

        st = self._state
        return render_state(st.location, st.visible, st.inventory, self.image_size)

    def _make_obs(self) -> dict[str, Any]:
        n = len(self._frames)
        images = np.stack([*self._frames, *([self._blank] * (self.image_history - n))])
        st = self._state
        shown = self._shown_commands()
        fields = {
            "task": st.goal,
            "observation": st.feedback,
            "choices": "\n".join(f"{i}. {c}" for i, c in enumerate(shown, 1)),
            "location": st.location,
            "visible": ", ".join(st.visible) or "nothing",
            "inventory": ", ".join(st.inventory) or "nothing",
        }
        text = self.prompt.format(fields, n, shown, state_in_text=self.state_in_text)
        return {"images": images, "num_images": n, "text": text}

    def _info(self, *, parse_ok: bool, action_valid: bool, done: bool) -> dict[str, Any]:
        st = self._state
        satisfied, total = st.goal_conditions
        return {
            "parse_ok": bool(parse_ok),
            "action_valid": bool(action_valid),
            "success": bool(st.won),
            "won": bool(st.won),
            "goal_condition_success": satisfied / total if total else 0.0,
            "task_type": self._game.task_type,
            "split": self._split,
            "game": str(self._game.path),
            "episode_return": float(self._return),
            "episode_length": int(self._steps),
        }

    def oracle_text(self) -> str | None:
        """The planner expert's next command as a valid answer in this env's response mode."""
        if self._state is None or self._state.won:
            return None
        plan = self._engine.expert_plan()
        if not plan:
            return None
        command = plan[0]
        if self.response_mode == "action_only":
            shown = self._shown_commands()
            return str(shown.index(command) + 1) if command in shown else None
        return json.dumps({"thoughts": "Following the expert's plan.", "action": command})
