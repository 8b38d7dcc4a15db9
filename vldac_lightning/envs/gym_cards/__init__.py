"""Gym-Cards (RL4VLM's four card games) re-implemented in-house as gymnasium environments.

Importing this package registers ``gym_cards/NumberLine-v0``, ``gym_cards/EZPoints-v0``,
``gym_cards/Points24-v0`` and ``gym_cards/Blackjack-v0``. No ``max_episode_steps`` is set: the
language wrapper applies the episode limit (20 steps for gym-cards).
"""

from __future__ import annotations

import gymnasium

from .base import REWARD_PROFILES, GymCardsEnv
from .blackjack import BlackjackEnv
from .ezpoints import EZPointsEnv
from .formula import FormulaError, evaluate
from .numberline import NumberLineEnv
from .points24 import Points24Env

ENV_IDS: dict[str, str] = {
    "gym_cards/NumberLine-v0": f"{__name__}.numberline:NumberLineEnv",
    "gym_cards/EZPoints-v0": f"{__name__}.ezpoints:EZPointsEnv",
    "gym_cards/Points24-v0": f"{__name__}.points24:Points24Env",
    "gym_cards/Blackjack-v0": f"{__name__}.blackjack:BlackjackEnv",
}


def register_gym_cards() -> None:
    """Register the four ids with gymnasium; safe to call any number of times."""
    for env_id, entry_point in ENV_IDS.items():
        if env_id not in gymnasium.registry:
            gymnasium.register(id=env_id, entry_point=entry_point)


register_gym_cards()

__all__ = [
    "ENV_IDS",
    "REWARD_PROFILES",
    "BlackjackEnv",
    "EZPointsEnv",
    "FormulaError",
    "GymCardsEnv",
    "NumberLineEnv",
    "Points24Env",
    "evaluate",
    "register_gym_cards",
]
