"""EZPoints: make 12 from two cards with "+" and "*".

Two distinct cards are dealt from a deck without aces (ranks 2..10, J, Q, K; J/Q/K count 10),
redrawn until their values make 12 by "+" or "*" (2+10, 3*4, 5+7, 6+6, ...), so every deal is
solvable. Rewards: +10 for "=" on a formula equal to 12 that uses both cards; the failure reward
(-1 under ``rl4vlm``; 0 under ``verl_agent``, which gives 0 instead of -1 on failure) for a wrong
or invalid "=", for a number not on an unused card, and for a formula longer than 5 entries
(which also ends the episode). Details of the formula rules are in :mod:`.formula`.
"""

from __future__ import annotations

from .base import RANK_VALUES, Card
from .formula import NUMBER_ACTIONS, FormulaEnv


class EZPointsEnv(FormulaEnv):
    """RL4VLM's EZPoints with seeded deals. 13 actions: "1".."10", "+", "*", "="."""

    action_names = (*NUMBER_ACTIONS, "+", "*", "=")
    target = 12
    num_cards = 2
    max_entries = 5
    deck_ranks = tuple(r for r in RANK_VALUES if r != "A")
    operators = "+*"
    parens = False
    concat_solutions = True  # only matters for injected hands such as A,2 -> "1" "2"
    card_w, card_h, card_y, formula_y, card_gap = 100, 140, 20, 180, 20

    def _deal(self) -> list[Card]:
        # Rejection sampling keeps the deal uniform over the solvable pairs (about 1 in 9 pairs is).
        while True:
            cards = super()._deal()
            a, b = (RANK_VALUES[rank] for rank, _ in cards)
            if a + b == self.target or a * b == self.target:
                return cards
