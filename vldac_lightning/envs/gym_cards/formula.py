"""Shared logic of the formula games (EZPoints, Points24): a safe evaluator, a brute-force solver
and the environment base class.

Formula rules (docs/environments.md#formula-rules):

- A number action must match the value of an unused card (J/Q/K = 10, A = 1); the card is then
  used. Otherwise the step costs the failure reward and a ``"_"`` placeholder is appended
  (which makes any later "=" fail) and ``info["action_valid"]`` is False.
- Adjacent number entries concatenate as digits when evaluated: ``["1", "2"]`` means 12. Each
  typed number still needs its own card.
- "=" evaluates the formula (exact rational arithmetic, never Python ``eval``): +10 if it equals
  the target and every card was used, else the failure reward; the episode terminates. An
  unbalanced/invalid formula or a division by zero is a failure too.
- Too long a formula (more than ``max_entries`` entries) ends the episode with the failure
  reward.
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache
from itertools import permutations, product
from typing import Any

from PIL import Image, ImageDraw

from .base import RANK_VALUES, Card, GymCardsEnv, parse_card
from .render import TABLE_GREEN, WHITE, draw_card_row, draw_text, draw_wrapped, new_canvas

NUMBER_ACTIONS: tuple[str, ...] = tuple(str(v) for v in range(1, 11))
PLACEHOLDER = "_"
_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}
_ATOM = 3  # precedence of a number or a parenthesised group


class FormulaError(ValueError):
    """The formula cannot be evaluated (syntax error, placeholder, division by zero)."""


def tokenize(entries: list[str] | tuple[str, ...]) -> list[str]:
    """Formula entries -> tokens, merging adjacent number entries into one multi-digit number."""
    tokens: list[str] = []
    for entry in entries:
        if entry.isdigit():
            if tokens and tokens[-1].isdigit():
                tokens[-1] += entry  # digits concatenate: "1" then "2" reads as 12
            else:
                tokens.append(entry)
        elif entry in _PRECEDENCE or entry in "()":
            tokens.append(entry)
        else:
            raise FormulaError(f"invalid entry {entry!r}")
    return tokens


def evaluate(entries: list[str] | tuple[str, ...]) -> Fraction:
    """Evaluate formula entries exactly (recursive descent: + - * / and parentheses).

    No unary operators: a formula must start with a number or "(". Raises FormulaError.
    """
    tokens = tokenize(entries)
    pos = 0

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

    def expr() -> Fraction:
        nonlocal pos
        value = term()
        while peek() in ("+", "-"):
            op = tokens[pos]
            pos += 1
            rhs = term()
            value = value + rhs if op == "+" else value - rhs
        return value

    def term() -> Fraction:
        nonlocal pos
        value = factor()
        while peek() in ("*", "/"):
            op = tokens[pos]
            pos += 1
            rhs = factor()
            if op == "*":
                value = value * rhs
            elif rhs == 0:
                raise FormulaError("division by zero")
            else:
                value = value / rhs
        return value

    def factor() -> Fraction:
        nonlocal pos
        tok = peek()
        if tok is None:
            raise FormulaError("unexpected end of formula")
        pos += 1
        if tok.isdigit():
            return Fraction(int(tok))
        if tok == "(":
            value = expr()
            if peek() != ")":
                raise FormulaError("unbalanced parentheses")
            pos += 1
            return value
        raise FormulaError(f"unexpected {tok!r}")

    result = expr()
    if pos != len(tokens):
        raise FormulaError(f"unexpected {tokens[pos]!r}")
    return result


def _trees(values: tuple[int, ...], ops: str) -> list[tuple[Fraction, tuple[str, ...], int]]:
    """All expression trees over ``values`` in this order: (value, tokens with minimal parens, precedence)."""
    if len(values) == 1:
        return [(Fraction(values[0]), (str(values[0]),), _ATOM)]
    out = []
    for i in range(1, len(values)):
        lefts, rights = _trees(values[:i], ops), _trees(values[i:], ops)
        for (lv, lt, lp), (rv, rt, rp), op in product(lefts, rights, ops):
            if op == "/" and rv == 0:
                continue
            value = {"+": lv + rv, "-": lv - rv, "*": lv * rv, "/": lv / rv if rv else lv}[op]
            prec = _PRECEDENCE[op]
            # Parenthesise only where precedence / non-associativity demands it (shorter formulas).
            if lp < prec:
                lt = ("(", *lt, ")")
            if rp < prec or (rp == prec and op in "-/"):
                rt = ("(", *rt, ")")
            out.append((value, (*lt, op, *rt), prec))
    return out


@lru_cache(maxsize=4096)
def solutions(
    values: tuple[int, ...], target: int, ops: str, parens: bool, concat: bool
) -> tuple[tuple[str, ...], ...]:
    """Every formula (entries, without "=") that uses each value once and evaluates to ``target``.

    ``parens``: search all expression trees (Points24); otherwise flat left-to-right formulas.
    ``concat``: also let adjacent numbers concatenate (only in flat formulas). Sorted shortest
    first, so the oracle is deterministic. Call with sorted ``values`` to share the cache.
    """
    found: set[tuple[str, ...]] = set()
    for perm in set(permutations(values)):
        if parens:
            candidates = [tokens for value, tokens, _ in _trees(perm, ops) if value == target]
        else:
            joins = (*ops, "") if concat else tuple(ops)  # "" = no operator: digits concatenate
            candidates = []
            for seq in product(joins, repeat=len(perm) - 1):
                tokens = [str(perm[0])]
                for op, v in zip(seq, perm[1:]):
                    tokens += ([op] if op else []) + [str(v)]
                candidates.append(tuple(tokens))
        for tokens in candidates:
            try:  # verify with the very evaluator the env uses
                if evaluate(tokens) == target:
                    found.add(tokens)
            except FormulaError:
                pass
    return tuple(sorted(found, key=lambda t: (len(t), t)))


class FormulaEnv(GymCardsEnv):
    """Base of EZPoints / Points24: deal cards, build a formula entry by entry, press "=".

    ``reset(options={"cards": ["A", ("2", 1)]})`` deals a fixed hand (tests, fixtures).
    """

    target: int = 12
    num_cards: int = 2
    max_entries: int = 5
    deck_ranks: tuple[str, ...] = ()
    operators: str = "+*"
    parens: bool = False
    concat_solutions: bool = True
    success_reward = 10.0
    # layout
    card_w, card_h, card_y, formula_y, card_gap = 100, 140, 20, 180, 12

    def __init__(self, reward_profile: str = "rl4vlm", render_mode: str | None = None) -> None:
        self.cards: list[Card] = []
        self.used: list[bool] = []
        self.formula: list[str] = []
        self._card_layer: Image.Image | None = None
        super().__init__(reward_profile=reward_profile, render_mode=render_mode)

    @property
    def card_values(self) -> list[int]:
        return [RANK_VALUES[rank] for rank, _ in self.cards]

    def _deal(self) -> list[Card]:
        """Draw ``num_cards`` distinct cards from one 4-suit deck of ``deck_ranks``."""
        deck = [(rank, suit) for rank in self.deck_ranks for suit in range(4)]
        picks = self.np_random.choice(len(deck), size=self.num_cards, replace=False)
        return [deck[int(i)] for i in picks]

    def _new_episode(self, options: dict[str, Any]) -> None:
        if "cards" in options:
            cards = [parse_card(c) for c in options["cards"]]
            if len(cards) != self.num_cards:
                raise ValueError(f"{type(self).__name__} needs {self.num_cards} cards, got {len(cards)}")
        else:
            cards = self._deal()
        self.cards = cards
        self.used = [False] * len(cards)
        self.formula = []
        self._card_layer = None

    def _apply(self, action: int) -> tuple[float, bool, bool, bool]:
        name = self.action_names[action]
        if name == "=":
            try:
                ok = evaluate(self.formula) == self.target and all(self.used)
            except FormulaError:  # invalid, unbalanced, placeholder, division by zero
                ok = False
            return (self.success_reward if ok else self.fail_reward), True, False, True
        reward, valid = 0.0, True
        if name in NUMBER_ACTIONS:
            value = int(name)
            free = [i for i, (v, u) in enumerate(zip(self.card_values, self.used)) if v == value and not u]
            if free:
                self.used[free[0]] = True
                self.formula.append(name)
            else:
                reward, valid = self.fail_reward, False
                self.formula.append(PLACEHOLDER)
        else:
            self.formula.append(name)
        if len(self.formula) > self.max_entries:
            # The game's rules say "truncate with -1", but this is a penalised game over caused by the agent,
            # not a time limit the state cannot show: report terminated=True so that value
            # targets do not bootstrap past it.
            return self.fail_reward, True, False, valid
        return reward, False, False, valid

    def solutions(self) -> tuple[tuple[str, ...], ...]:
        """All solution formulas of the current hand (entries, without the final "=")."""
        return solutions(
            tuple(sorted(self.card_values)), self.target, self.operators, self.parens, self.concat_solutions
        )

    def oracle_action(self) -> int | None:
        """Next entry of the first solution that extends the formula written so far ("=" when it is
        complete); None when no solution is consistent with it or the episode is over."""
        if self.done:
            return None
        n = len(self.formula)
        for sol in self.solutions():
            if tuple(self.formula) == sol[:n]:
                return self.action_index(sol[n] if n < len(sol) else "=")
        return None

    def _state_info(self) -> dict[str, Any]:
        return {
            "cards": [rank for rank, _ in self.cards],
            "card_values": self.card_values,
            "cards_used": list(self.used),
            "formula": list(self.formula),
            "formula_text": " ".join(self.formula),
            "target": self.target,
        }

    def _draw(self) -> Image.Image:
        # The cards do not change within an episode: draw them once, then only the formula.
        if self._card_layer is None:
            layer, draw = new_canvas(TABLE_GREEN)
            draw_card_row(layer, self.cards, self.card_y, self.card_w, self.card_h, gap=self.card_gap)
            draw_text(draw, (12, self.formula_y), "Formula:", 26, WHITE)
            self._card_layer = layer
        img = self._card_layer.copy()
        draw = ImageDraw.Draw(img)
        draw_wrapped(draw, (12, self.formula_y + 34, 288, 292), self.formula, 26)
        return img
