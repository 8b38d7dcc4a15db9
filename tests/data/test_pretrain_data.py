"""Pretraining data (data/pretrain_data.py): the descriptions match the frames, the JSON answers'
actions are legal and uniform, and every deal comes from the pretraining seed range."""

from __future__ import annotations

import re

import numpy as np
import pytest

from vldac_lightning.data.pretrain_data import DESCRIBE_PROMPT, PretrainStream
from vldac_lightning.envs.gym_cards.numberline import _numberline_image
from vldac_lightning.envs.gym_cards.render import to_array
from vldac_lightning.envs.parsing import parse_action
from vldac_lightning.envs.pool_data import episode_seed, eval_seeds, pretrain_seed, train_seeds

CARD_ENVS = ("gym_cards/EZPoints-v0", "gym_cards/Points24-v0")


def test_numberline_descriptions_name_the_state_the_frame_shows() -> None:
    stream = PretrainStream(["gym_cards/NumberLine-v0"], seed=3, max_random_steps=6)
    try:
        seen = set()
        for i in range(60):
            ex = stream[i]
            target, current = map(int, re.fullmatch(r"Target: (\d+)\. Current: (\d+)\.", ex.state).groups())
            # The frame is exactly the env's drawing of the described (target, current).
            np.testing.assert_array_equal(ex.image, to_array(_numberline_image(target, current)))
            assert target != current  # never a finished episode's frame
            seen.add((target, current))
            if ex.task == "describe":
                assert (ex.prompt, ex.answer, ex.action) == (DESCRIBE_PROMPT, ex.state, None)
        assert len(seen) > 10  # random reachable states, not one deal
    finally:
        stream.close()


@pytest.mark.parametrize("env_id", CARD_ENVS)
def test_card_descriptions_agree_with_the_real_prompt(env_id: str) -> None:
    """The description's formula is the one the env's own prompt states (two renderings of one state)."""
    stream = PretrainStream([env_id], seed=1, max_random_steps=4)
    try:
        formulas = set()
        for i in range(40):
            ex = stream.example(i, "json")
            described = re.search(r"Formula: '([^']*)'\.$", ex.state)
            prompted = re.search(r"current formula: '([^']*)'", ex.prompt)
            assert described and prompted and described.group(1) == prompted.group(1)
            formulas.add(described.group(1))
        assert len(formulas) > 3  # mid-episode states, not only fresh deals
    finally:
        stream.close()


def test_json_answers_parse_to_legal_uniform_actions() -> None:
    """EZPoints' 13 actions over 1,300 JSON answers: each legal, and their counts pass a chi-square
    test of uniformity. The stream is seeded, so the test is deterministic (it cannot flake); the
    threshold is the 0.999 quantile of χ²(12) = 32.9, so a uniform sampler fails it for 1 seed in 1,000."""
    stream = PretrainStream(["gym_cards/EZPoints-v0"], seed=0, describe_fraction=0.0)
    try:
        names = stream.envs[0].action_names
        counts = dict.fromkeys(names, 0)
        n = 1300
        for i in range(n):
            ex = stream[i]
            assert ex.task == "json" and ex.legal_actions == names
            result = parse_action(ex.answer, names, mode="json")
            assert result.parse_ok and result.action_valid and result.action == ex.action
            counts[ex.action] += 1
        expected = n / len(names)
        chi2 = sum((c - expected) ** 2 / expected for c in counts.values())
        assert chi2 < 32.9, counts
        # A biased draw would fail: e.g. one action twice as likely is far beyond the threshold.
        biased = dict(counts, **{names[0]: counts[names[0]] * 2})
        assert sum((c - expected) ** 2 / expected for c in biased.values()) > 32.9
    finally:
        stream.close()


def test_the_stream_is_a_pure_function_of_seed_stream_and_index() -> None:
    a = PretrainStream(["gym_cards/Blackjack-v0", "gym_cards/NumberLine-v0"], seed=5)
    b = PretrainStream(["gym_cards/Blackjack-v0", "gym_cards/NumberLine-v0"], seed=5)
    try:
        for i in (7, 3, 7, 0):  # any order
            x, y = a[i], b[i]
            assert (x.prompt, x.answer, x.env_id) == (y.prompt, y.answer, y.env_id)
            np.testing.assert_array_equal(x.image, y.image)
        assert a[1].env_id == "gym_cards/NumberLine-v0"  # envs alternate by index
        held_out = PretrainStream(["gym_cards/Blackjack-v0", "gym_cards/NumberLine-v0"], seed=5, stream=1)
        assert [held_out[i].state for i in range(8)] != [a[i].state for i in range(8)]
        held_out.close()
    finally:
        a.close()
        b.close()


def test_pretraining_seeds_are_disjoint_from_training_and_evaluation_seeds(monkeypatch: pytest.MonkeyPatch) -> None:
    pre = [pretrain_seed(base, stream, i) for base in (0, 1, 99_999) for stream in (0, 1, 1000) for i in range(200)]
    assert all(2_000_000_000 <= s < 3_000_000_000 for s in pre)
    train = train_seeds(0, 10_000) + train_seeds(99_999, 10_000)
    evaluation = eval_seeds(0, 10_000) + eval_seeds(99_999, 10_000)
    later = [episode_seed(s, k) for s in train[:50] + evaluation[:50] for k in range(1, 50)]
    assert max(train + evaluation + later) < 2_000_000_000
    assert not set(pre) & set(train + evaluation + later)
    with pytest.raises(ValueError, match="must be >= 0"):
        pretrain_seed(0, -1, 0)

    # Every reset the stream makes (the first deal and re-deals after an episode ends) uses one.
    stream = PretrainStream(["gym_cards/EZPoints-v0"], seed=0, max_random_steps=12)
    resets: list[int] = []
    env = stream.envs[0]
    original = env.reset
    monkeypatch.setattr(env, "reset", lambda *, seed=None, options=None: (resets.append(seed), original(seed=seed))[1])
    try:
        for i in range(60):
            stream[i]
    finally:
        stream.close()
    assert len(resets) > 60  # some walks ended an episode ("=") and were re-dealt
    assert all(s is not None and 2_000_000_000 <= s < 3_000_000_000 for s in resets)


def test_bad_settings_are_named() -> None:
    with pytest.raises(ValueError, match="pretrain.envs is empty"):
        PretrainStream([])
    with pytest.raises(ValueError, match="describe_fraction"):
        PretrainStream(["gym_cards/NumberLine-v0"], describe_fraction=1.5)
