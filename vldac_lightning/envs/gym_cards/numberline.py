"""NumberLine: move a marker on {0..max_position} to a target with "-" / "+".

Rules (docs/environments.md#numberline): target and current are drawn uniformly and distinct. A move clamps at 0 and
``max_position``. Reaching the target gives +1 and terminates; a move that does not reduce the
distance (including a clamped move) gives -1 (0 under the ``verl_agent`` profile, which gives 0
instead of -1 on failure); any other move gives 0. After ``2 * max_position`` steps without
reaching the target the episode is truncated: a time limit, since the image does not show time.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from PIL import Image

from .base import GymCardsEnv
from .render import BLACK, CANVAS_SIZE, WHITE, draw_text, fit_size, new_canvas


class NumberLineEnv(GymCardsEnv):
    """RL4VLM's NumberLine with seeded deals. Actions: 0 = "-", 1 = "+"."""

    action_names = ("-", "+")

    def __init__(
        self, max_position: int = 5, reward_profile: str = "rl4vlm", render_mode: str | None = None
    ) -> None:
        if max_position < 1:
            raise ValueError(
                f"max_position must be >= 1 (target and current must differ), got {max_position}"
            )
        self.max_position = int(max_position)
        self.max_steps = 2 * self.max_position
        self.target = 0
        self.current = 0
        self.steps = 0
        super().__init__(reward_profile=reward_profile, render_mode=render_mode)

    def _new_episode(self, options: dict[str, Any]) -> None:
        # Options "target"/"current" pin a state (tests, fixtures); otherwise a seeded deal.
        n = self.max_position + 1
        self.target = int(options.get("target", self.np_random.integers(n)))
        if "current" in options:
            self.current = int(options["current"])
        else:
            # Uniform over the n-1 positions other than the target.
            c = int(self.np_random.integers(n - 1))
            self.current = c + 1 if c >= self.target else c
        if not (0 <= self.target < n and 0 <= self.current < n) or self.target == self.current:
            raise ValueError(f"need distinct target/current in 0..{self.max_position}")
        self.steps = 0

    def _apply(self, action: int) -> tuple[float, bool, bool, bool]:
        delta = 1 if self.action_names[action] == "+" else -1
        before = abs(self.current - self.target)
        self.current = min(max(self.current + delta, 0), self.max_position)
        self.steps += 1
        if self.current == self.target:
            return 1.0, True, False, True
        reward = 0.0 if abs(self.current - self.target) < before else self.fail_reward
        return reward, False, self.steps >= self.max_steps, True

    def oracle_action(self) -> int | None:
        """Step toward the target; None once the episode is over."""
        if self.done:
            return None
        return self.action_index("+" if self.target > self.current else "-")

    def _state_info(self) -> dict[str, Any]:
        return {"target": self.target, "current": self.current, "max_position": self.max_position}

    def _draw(self) -> Image.Image:
        return _numberline_image(self.target, self.current)


@lru_cache(maxsize=4096)
def _numberline_image(target: int, current: int) -> Image.Image:
    """The image of a state; cached because glyph rendering dominates step time and states repeat.

    Black on white, as big as fits: the image must stay legible when a VLM processor downscales
    it to ~56x56. Callers must not modify the returned image (the env converts it to an array).
    """
    img, draw = new_canvas(WHITE)
    lines = (f"Target: {target}", f"Current: {current}")
    size = fit_size(lines, CANVAS_SIZE - 16, 64)
    draw_text(draw, (CANVAS_SIZE / 2, CANVAS_SIZE * 0.33), lines[0], size, BLACK, anchor="mm")
    draw_text(draw, (CANVAS_SIZE / 2, CANVAS_SIZE * 0.67), lines[1], size, BLACK, anchor="mm")
    return img
