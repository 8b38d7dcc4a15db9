"""Points24: make 24 from four cards with + - * / and parentheses.

Four distinct cards from a standard 52-card deck (A = 1, J/Q/K = 10); not every deal is
solvable. All four cards must be used. Rewards: +10 for "=" on a formula equal to 24 that uses
all four cards; the failure reward (-1 under ``rl4vlm``; 0 under ``verl_agent``, which gives 0
instead of -1 on failure) for a wrong or invalid "=" (division by zero included), for a number
not on an unused card, and for a formula longer than 20 entries (which also ends the episode).
Details of the formula rules are in :mod:`.formula`.
"""

from __future__ import annotations

from .base import ALL_RANKS
from .formula import NUMBER_ACTIONS, FormulaEnv


class Points24Env(FormulaEnv):
    """RL4VLM's Points24 with seeded deals. 17 actions: "1".."10", "+", "-", "*", "/", "(", ")", "="."""

    action_names = (*NUMBER_ACTIONS, "+", "-", "*", "/", "(", ")", "=")
    target = 24
    num_cards = 4
    max_entries = 20
    deck_ranks = ALL_RANKS
    operators = "+-*/"
    parens = True
    concat_solutions = False
    card_w, card_h, card_y, formula_y, card_gap = 64, 92, 20, 128, 8

    def is_solvable(self) -> bool:
        """Whether the dealt hand can make 24 at all (brute force, cached per hand)."""
        return bool(self.solutions())
