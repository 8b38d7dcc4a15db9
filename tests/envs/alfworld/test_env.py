"""The ALFWorld language env: prompt, rewards (won / inadmissible / goal-condition progress), seeds ->
splits, the rendered picture, and training on games in the official dataset layout."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vldac_lightning.envs.alfworld.env import EVAL_SEED_OFFSET, AlfworldEnv
from vldac_lightning.envs.alfworld.generator import TASK_TYPES
from vldac_lightning.envs.alfworld.render import render_state, type_colour
from vldac_lightning.envs.registry import make_language_env

HEAT = TASK_TYPES.index("pick_heat_then_place_in_recep")  # game index i plays TASK_TYPES[i % 6]


def answer(command: str) -> str:
    return json.dumps({"thoughts": "...", "action": command})


def play_expert(env: AlfworldEnv) -> list[tuple[float, dict[str, Any]]]:
    out = []
    for _ in range(env.max_episode_steps):
        _, reward, term, trunc, info = env.step(env.oracle_text())
        out.append((reward, info))
        if term or trunc:
            break
    return out


def test_prompt_lists_the_admissible_commands_in_both_response_modes(make_env: Any) -> None:
    env = make_env(split_sizes={"train": 12})
    obs, info = env.reset(seed=HEAT)
    assert env.observation_space.contains(obs)
    commands = env.admissible_commands
    assert "go to microwave 1" in commands and len(commands) > 5
    assert all(f'"{c}"' in obs["text"] for c in commands)
    assert "Your task is to: " in obs["text"] and '"thoughts"' in obs["text"] and '"action"' in obs["text"]
    assert info["task_type"] == "pick_heat_then_place_in_recep" and info["split"] == "train"

    short = make_env(split_sizes={"train": 12}, response_mode="action_only", prompt_version="action_only",
                     max_choices=40)
    obs, _ = short.reset(seed=HEAT)
    assert short.action_names == tuple(str(i) for i in range(1, 41))  # fixed: the policy's trie is built once
    for i, c in enumerate(short.admissible_commands[:40], 1):
        assert f"\n{i}. {c}\n" in obs["text"] + "\n"


def test_rewards_for_progress_inadmissible_and_won(make_env: Any) -> None:
    env = make_env(split_sizes={"train": 12})
    obs, _ = env.reset(seed=HEAT)
    # Inadmissible and unparseable answers: -1, nothing changes (same text, same engine state).
    before = (obs["text"], env.admissible_commands)
    for bad, parse_ok in ((answer("fly to the moon"), True), ("no json here", False)):
        obs2, reward, term, trunc, info = env.step(bad)
        assert reward == -1.0 and not info["action_valid"] and info["parse_ok"] == parse_ok
        assert (obs2["text"], env.admissible_commands) == before and not (term or trunc)
    steps = play_expert(env)
    rewards = [r for r, _ in steps]
    gcs = [i["goal_condition_success"] for _, i in steps]
    # ALFRED's heat task has 3 goal conditions: heated, placed, placed-and-hot.
    assert gcs[-1] == 1.0 and all(g in (0.0, 1 / 3, 2 / 3, 1.0) for g in gcs)
    assert 1 / 3 in gcs  # heating alone satisfies one condition
    np.testing.assert_allclose(rewards[:-1], gcs[:-1])  # level mode: + the fraction met, each step
    assert rewards[-1] == pytest.approx(50.0 + 1.0)
    last = steps[-1][1]
    assert last["success"] and last["won"] and last["episode_length"] == len(steps) + 2
    assert last["episode_return"] == pytest.approx(sum(rewards) - 2.0)


def test_delta_goal_condition_reward_sums_to_one(make_env: Any) -> None:
    env = make_env(split_sizes={"train": 12}, gc_reward="delta", response_mode="action_only",
                   prompt_version="action_only")
    env.reset(seed=HEAT + 6)
    _, reward, _, _, info = env.step("49")  # past the listed commands: inadmissible
    assert reward == -1.0 and info["parse_ok"] and not info["action_valid"]
    rewards = [r for r, _ in play_expert(env)]
    assert sum(rewards) == pytest.approx(50.0 + 1.0) and min(rewards) >= 0.0


def test_random_fallback_plays_an_admissible_command(make_env: Any) -> None:
    env = make_env(split_sizes={"train": 12}, parse_failure="random")
    env.reset(seed=0)
    _, reward, _, _, info = env.step("???")
    assert not info["action_valid"] and reward <= 0.0 and "Nothing happens" not in env._state.feedback


def test_horizon_truncates(make_env: Any) -> None:
    env = make_env(split_sizes={"train": 12}, max_episode_steps=3)
    env.reset(seed=1)
    done = [env.step(answer("look"))[2:4] for _ in range(3)]
    assert done == [(False, False), (False, False), (False, True)]


def test_seeds_pick_the_split_and_game(make_env: Any) -> None:
    env = make_env(split_sizes={"train": 12, "valid_unseen": 6}, eval_split="valid_unseen")
    _, a = env.reset(seed=5)
    _, b = env.reset(seed=EVAL_SEED_OFFSET + 5)
    _, c = env.reset(seed=5 + 12)  # wraps around the train split's size
    assert (a["split"], b["split"]) == ("train", "valid_unseen")
    assert a["game"] != b["game"] and c["game"] == a["game"]
    assert "/valid_unseen/" in b["game"] and a["task_type"] == TASK_TYPES[5]


def test_image_history_and_picture(make_env: Any) -> None:
    env = make_env(split_sizes={"train": 12}, image_history=2, image_size=96)
    obs, _ = env.reset(seed=HEAT)
    assert obs["images"].shape == (2, 96, 96, 3) and obs["num_images"] == 1
    assert not obs["images"][1].any()  # padding frame
    obs, *_ = env.step(env.oracle_text())
    assert obs["num_images"] == 2 and not np.array_equal(obs["images"][0], obs["images"][1])

    empty = render_state("cabinet 2", [], [], 64)
    holding = render_state("cabinet 2", ["mug 1"], ["apple 1"], 64)
    assert empty.shape == (64, 64, 3) and empty.dtype == np.uint8
    assert tuple(empty[-2, 1]) != tuple(holding[-2, 1])  # the bottom band shows holding vs empty hands
    assert tuple(empty[1, 1]) == type_colour("cabinet 9")  # the top band's colour is the receptacle type's
    with pytest.raises(ValueError, match="image_size"):
        render_state("x", [], [], 8)


def test_official_layout_is_used_when_present(tmp_path: Path, cache_dir: Path) -> None:
    """A fixture in the official layout (json_2.1.1/<split>/<task>/<trial>/), built by the generator."""
    from vldac_lightning.envs.alfworld.games import GeneratedGames, OfficialGames

    official = tmp_path / "alfworld_data"
    for split, n in (("train", 6), ("valid_seen", 2), ("valid_unseen", 2)):
        for i in range(n):
            ref = GeneratedGames(cache_dir, split, size=1000).get(i)
            dst = official / ref.path.relative_to(cache_dir).parent
            shutil.copytree(ref.path.parent, dst)
    # Trials ALFWorld skips: movable/sliced ones and games not known to be solvable.
    src = next((official / "json_2.1.1" / "train").glob("*/*"))
    shutil.copytree(src, src.parent.parent / "pick_and_place_with_movable_recep-X-Y-Z-1" / "trial_1")
    unsolvable = src.parent.parent / "pick_and_place_simple-A-None-B-1" / "trial_2"
    shutil.copytree(src, unsolvable)
    data = json.loads((unsolvable / "game.tw-pddl").read_text())
    (unsolvable / "game.tw-pddl").write_text(json.dumps({**data, "solvable": False}))

    games = OfficialGames(official, "train")
    assert games.size == 6 and {g.task_type for g in games.games} == set(TASK_TYPES)
    assert OfficialGames(official, "train", ("pick_two_obj_and_place",)).size == 1

    env = make_language_env("alfworld/AlfWorld-v0", env_kwargs={"source": "auto", "data_dir": str(official)},
                            response_mode="json", max_episode_steps=50)
    try:
        assert env.source == "official"
        _, info = env.reset(seed=2)
        assert info["game"].startswith(str(official)) and info["task_type"] == TASK_TYPES[2]
        steps = play_expert(env)
        assert steps[-1][1]["success"]
        _, info = env.reset(seed=EVAL_SEED_OFFSET + 1)
        assert "/valid_unseen/" in info["game"]
    finally:
        env.close()
    with pytest.raises(FileNotFoundError, match="json_2.1.1"):
        OfficialGames(tmp_path / "nothing", "train")


def test_bad_options_are_rejected(make_env: Any) -> None:
    for kwargs, key in (({"source": "web"}, "source"), ({"eval_split": "test"}, "eval_split"),
                        ({"task_types": ["cook"]}, "task_types"), ({"max_choices": 0}, "max_choices"),
                        ({"gc_reward": "sum"}, "gc_reward")):
        with pytest.raises(ValueError, match=key):
            make_env(**kwargs)


def test_replaying_a_game_starts_from_its_initial_state(make_env: Any) -> None:
    """Fast Downward's translation is memoised per process: a replay must not inherit the last play's state."""
    import sys

    argv = list(sys.argv)
    env = make_env(split_sizes={"train": 12})
    first, _ = env.reset(seed=HEAT)
    commands = env.admissible_commands
    assert play_expert(env)[-1][1]["won"]
    again, info = env.reset(seed=HEAT)
    assert again["text"] == first["text"] and env.admissible_commands == commands
    assert not info["won"] and info["goal_condition_success"] == 0.0
    assert np.array_equal(again["images"], first["images"])
    assert sys.argv == argv  # the translator overwrites sys.argv; the cache wrapper restores it
