"""Gym-Cards formula games: EZPoints and Points24 rules, evaluator and solver."""

from __future__ import annotations

from fractions import Fraction

import pytest

from vldac_lightning.envs.gym_cards import EZPointsEnv, FormulaError, Points24Env, evaluate
from vldac_lightning.envs.gym_cards.formula import solutions


def play(env, entries):
    """Step the named entries; return the list of (reward, terminated, truncated, info)."""
    out = []
    for name in entries:
        _, r, term, trunc, info = env.step(env.action_index(name))
        out.append((r, term, trunc, info))
    return out


def ez(cards, **kw):
    env = EZPointsEnv(**kw)
    env.reset(seed=0, options={"cards": cards})
    return env


def p24(cards, **kw):
    env = Points24Env(**kw)
    env.reset(seed=0, options={"cards": cards})
    return env


# --- evaluator ------------------------------------------------------------------------------


def test_evaluator_precedence_parens_and_exact_division():
    assert evaluate(["2", "+", "3", "*", "4"]) == 14
    assert evaluate(["(", "2", "+", "3", ")", "*", "4"]) == 20
    assert evaluate(["8", "-", "3", "-", "2"]) == 3  # left associative
    assert evaluate(["8", "/", "(", "3", "-", "8", "/", "3", ")"]) == 24  # exact rationals
    assert evaluate(["1", "/", "3"]) == Fraction(1, 3)


def test_evaluator_concatenates_adjacent_numbers():
    assert evaluate(["1", "2"]) == 12
    assert evaluate(["1", "0", "+", "2"]) == 12
    assert evaluate(["2", "10"]) == 210


@pytest.mark.parametrize(
    "entries",
    [
        [],
        ["+"],
        ["2", "+"],
        ["*", "2"],
        ["(", "2"],
        ["2", ")"],
        ["(", ")"],
        ["2", "_"],
        ["2", "/", "0"],
        ["4", "/", "(", "2", "-", "2", ")"],
        ["__import__('os')"],
        ["-", "2"],
    ],
)
def test_evaluator_rejects_invalid_formulas(entries):
    with pytest.raises(FormulaError):
        evaluate(entries)


# --- EZPoints -------------------------------------------------------------------------------


def test_ezpoints_success_plus_ten():
    env = ez(["5", "7"])
    steps = play(env, ["5", "+", "7", "="])
    assert [s[0] for s in steps] == [0.0, 0.0, 0.0, 10.0]
    assert steps[-1][1] is True and steps[-1][3]["success"] is True
    assert steps[-2][3]["formula"] == ["5", "+", "7"] and steps[-2][3]["formula_text"] == "5 + 7"


def test_ezpoints_face_cards_count_ten():
    env = ez(["2", "K"])
    assert play(env, ["10", "+", "2", "="])[-1][0] == 10.0
    env = ez(["3", "Q"])
    _, info = env.reset(options={"cards": ["3", "Q"]})
    assert info["card_values"] == [3, 10] and info["cards"] == ["3", "Q"] and info["target"] == 12


def test_ezpoints_wrong_result_minus_one():
    env = ez(["5", "7"])
    r, term, trunc, info = play(env, ["5", "*", "7", "="])[-1]
    assert (r, term, trunc, info["success"]) == (-1.0, True, False, False)


def test_ezpoints_all_cards_required():
    class Target10(EZPointsEnv):  # "10" alone hits this target, isolating the all-cards rule
        target = 10

    env = Target10()
    env.reset(options={"cards": ["10", "2"]})
    assert play(env, ["10", "="])[-1][:2] == (-1.0, True)
    env.reset(options={"cards": ["5", "2"]})
    assert play(env, ["5", "*", "2", "="])[-1][0] == 10.0  # same target with both cards: success


def test_ezpoints_unavailable_number_placeholder():
    env = ez(["5", "7"])
    r, term, _, info = play(env, ["3"])[0]
    assert (r, term, info["action_valid"]) == (-1.0, False, False)
    assert info["formula"] == ["_"] and info["formula_text"] == "_"
    # A used card is no longer available: the second "5" is invalid.
    env = ez(["5", "7"])
    steps = play(env, ["5", "+", "5"])
    assert steps[0][3]["action_valid"] is True and steps[1][3]["action_valid"] is True
    assert steps[2][0] == -1.0 and steps[2][3]["action_valid"] is False
    assert steps[2][3]["formula"] == ["5", "+", "_"]
    assert play(env, ["="])[-1][0] == -1.0  # a placeholder makes the formula invalid


def test_ezpoints_digit_concatenation():
    # Injected ace and 2: "1" then "2" reads as 12 and uses both cards.
    env = ez(["A", "2"])
    steps = play(env, ["1", "2", "="])
    assert [s[0] for s in steps] == [0.0, 0.0, 10.0]
    assert env.oracle_action() is None
    env = ez(["A", "2"])
    assert env.solutions()[0] == ("1", "2")
    # And a real deal: 2 and 6 typed together read as 26, not 2*6.
    env = ez(["2", "6"])
    assert play(env, ["2", "6", "="])[-1][0] == -1.0


def test_ezpoints_more_than_five_entries_ends_episode():
    env = ez(["5", "7"])
    steps = play(env, ["5", "+", "+", "+", "+"])
    assert all(s[0] == 0.0 and not s[1] for s in steps)
    r, term, trunc, info = play(env, ["+"])[0]
    assert (r, term, trunc, info["success"]) == (-1.0, True, False, False)  # game over, not a time limit


def test_ezpoints_invalid_formula_at_equals():
    env = ez(["5", "7"])
    assert play(env, ["+", "="])[-1][:2] == (-1.0, True)
    env = ez(["5", "7"])
    assert play(env, ["="])[0][:2] == (-1.0, True)


def test_ezpoints_verl_agent_profile():
    env = ez(["5", "7"], reward_profile="verl_agent")
    steps = play(env, ["3", "5", "="])
    assert [s[0] for s in steps] == [0.0, 0.0, 0.0] and steps[0][3]["action_valid"] is False
    env = ez(["5", "7"], reward_profile="verl_agent")
    assert play(env, ["5", "+", "7", "="])[-1][0] == 10.0


def test_ezpoints_always_solvable_and_oracle_wins_200_seeds():
    env = EZPointsEnv()
    for seed in range(200):
        _, info = env.reset(seed=seed)
        assert "A" not in info["cards"] and len(set(map(tuple, env.cards))) == 2
        a, b = info["card_values"]
        assert a + b == 12 or a * b == 12
        for _ in range(5):
            _, r, term, trunc, info = env.step(env.oracle_action())
            if term:
                break
        assert r == 10.0 and info["success"], (seed, info)


def test_ezpoints_oracle_continues_a_partial_formula_and_gives_up_on_a_wrong_one():
    env = ez(["3", "4"])
    play(env, ["4"])
    assert env.action_names[env.oracle_action()] == "*"
    play(env, ["*"])
    assert env.action_names[env.oracle_action()] == "3"
    env = ez(["3", "4"])
    play(env, ["4", "+"])
    assert env.oracle_action() is None


# --- Points24 -------------------------------------------------------------------------------


def test_points24_success_and_all_four_cards_required():
    env = p24(["4", "6", "A", "A"])
    assert play(env, ["4", "*", "6", "="])[-1][:2] == (-1.0, True)  # 24, but two cards unused
    env = p24(["4", "6", "A", "A"])
    steps = play(env, ["4", "*", "6", "*", "1", "*", "1", "="])
    assert steps[-1][0] == 10.0 and steps[-1][3]["success"]


def test_points24_parentheses_and_division():
    env = p24(["3", "3", "8", "8"])
    steps = play(env, ["8", "/", "(", "3", "-", "8", "/", "3", ")", "="])
    assert steps[-1][0] == 10.0


def test_points24_division_by_zero_minus_one():
    env = p24(["4", "4", "6", "6"])
    r, term, trunc, _ = play(env, ["6", "/", "(", "4", "-", "4", ")", "*", "6", "="])[-1]
    assert (r, term, trunc) == (-1.0, True, False)


def test_points24_more_than_twenty_entries_ends_episode():
    env = p24(["4", "6", "A", "A"])
    steps = play(env, ["("] * 20)
    assert all(s[0] == 0.0 and not s[1] for s in steps)
    assert play(env, ["("])[0][:3] == (-1.0, True, False)


def test_points24_solver_and_oracle():
    env = p24(["A", "A", "A", "A"])
    assert not env.is_solvable() and env.oracle_action() is None
    assert ("8", "/", "(", "3", "-", "8", "/", "3", ")") in solutions((3, 3, 8, 8), 24, "+-*/", True, False)
    env = Points24Env()
    wins = solvable = 0
    for seed in range(20):
        env.reset(seed=seed)
        if not env.is_solvable():
            continue
        solvable += 1
        while (a := env.oracle_action()) is not None:
            _, r, term, _, info = env.step(a)
        wins += r == 10.0 and info["success"]
    assert solvable >= 10 and wins == solvable


def test_points24_deal_uses_full_deck_of_distinct_cards():
    env = Points24Env()
    ranks = set()
    for seed in range(100):
        _, info = env.reset(seed=seed)
        assert len(set(env.cards)) == 4 and info["target"] == 24
        ranks.update(info["cards"])
    assert "A" in ranks and {"J", "Q", "K"} <= ranks
