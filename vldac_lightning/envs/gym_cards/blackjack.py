"""Blackjack with gymnasium's rules, rendered as playing cards.

Rules (gymnasium ``Blackjack-v1``): infinite deck (each draw is A,2..10,J,Q,K uniformly; face
cards count 10), an ace counts 11 when that does not bust the hand ("usable ace"). The dealer
and the player get two cards; the dealer shows one. "hit" draws a card (bust: -1, episode over);
"stand" makes the dealer draw until its sum is at least 17 (a soft 17 stands), then +1 / 0 / -1
for a higher / equal / lower score (a bust scores 0). A natural pays 1.5 only with
``natural=True`` (default off, like gymnasium). Under the ``verl_agent`` profile a loss gives 0
instead of -1 (verl-agent gives 0 on failure).
"""

from __future__ import annotations

from typing import Any

from PIL import Image

from .base import RANK_VALUES, Card, GymCardsEnv, parse_card
from .render import TABLE_GREEN, WHITE, draw_card_row, draw_text, new_canvas


def hand_sum(values: list[int]) -> int:
    """Best blackjack total: an ace counts 11 if that does not bust the hand."""
    total = sum(values)
    return total + 10 if has_usable_ace(values) else total


def has_usable_ace(values: list[int]) -> bool:
    return 1 in values and sum(values) + 10 <= 21


def hand_score(values: list[int]) -> int:
    """Score compared at showdown: the sum, or 0 for a bust."""
    total = hand_sum(values)
    return 0 if total > 21 else total


def is_natural(values: list[int]) -> bool:
    return sorted(values) == [1, 10]


class BlackjackEnv(GymCardsEnv):
    """Seeded, image-based Blackjack. Actions: 0 = "stand", 1 = "hit".

    ``reset(options={"deck": ["10", "7", ...]})`` stacks the next draws (dealer's two cards,
    then the player's two, then hits and the dealer's draws) before the RNG takes over; tests use it.
    """

    action_names = ("stand", "hit")

    def __init__(
        self, reward_profile: str = "rl4vlm", render_mode: str | None = None, natural: bool = False
    ) -> None:
        self.natural = natural
        self.player: list[Card] = []
        self.dealer: list[Card] = []
        self._stack: list[Card] = []
        super().__init__(reward_profile=reward_profile, render_mode=render_mode)

    @staticmethod
    def _values(cards: list[Card]) -> list[int]:
        return [RANK_VALUES[rank] for rank, _ in cards]

    def _next_card(self) -> Card:
        return self._stack.pop(0) if self._stack else self._draw_card()

    def _new_episode(self, options: dict[str, Any]) -> None:
        self._stack = [parse_card(c) for c in options.get("deck", [])]
        # Same order as gymnasium: dealer's hand first, then the player's.
        self.dealer = [self._next_card(), self._next_card()]
        self.player = [self._next_card(), self._next_card()]

    def _apply(self, action: int) -> tuple[float, bool, bool, bool]:
        if self.action_names[action] == "hit":
            self.player.append(self._next_card())
            if hand_sum(self._values(self.player)) > 21:
                return self.fail_reward, True, False, True
            return 0.0, False, False, True
        while hand_sum(self._values(self.dealer)) < 17:
            self.dealer.append(self._next_card())
        player, dealer = hand_score(self._values(self.player)), hand_score(self._values(self.dealer))
        if player > dealer:
            reward = 1.5 if self.natural and is_natural(self._values(self.player)) else 1.0
        elif player == dealer:
            reward = 0.0
        else:
            reward = self.fail_reward
        return reward, True, False, True

    def _visible_dealer(self) -> list[Card]:
        # The hole card stays hidden until the episode ends.
        return list(self.dealer) if self.done else self.dealer[:1]

    def oracle_action(self) -> int | None:
        """Hit below 17, else stand (a simple expert); None once the episode is over."""
        if self.done:
            return None
        return self.action_index("hit" if hand_sum(self._values(self.player)) < 17 else "stand")

    def _state_info(self) -> dict[str, Any]:
        player_values = self._values(self.player)
        visible = self._visible_dealer()
        return {
            "player_cards": [rank for rank, _ in self.player],
            "dealer_cards": [rank for rank, _ in visible],
            "player_sum": hand_sum(player_values),
            "dealer_sum": hand_sum(self._values(visible)),
            "usable_ace": has_usable_ace(player_values),
        }

    def _draw(self) -> Image.Image:
        img, draw = new_canvas(TABLE_GREEN)
        info = self._state_info()
        draw_text(draw, (12, 6), f"Dealer: {info['dealer_sum']}", 24, WHITE)
        dealer_row = self._visible_dealer() + ([None] if not self.done else [])
        draw_card_row(img, dealer_row, 38, 70, 100)
        draw_text(draw, (12, 150), f"Player: {info['player_sum']}", 24, WHITE)
        draw_card_row(img, self.player, 182, 70, 100)
        return img
