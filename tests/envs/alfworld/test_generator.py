"""The procedural ALFWorld generator: every task type yields games the planner expert wins, games are
reproducible from (split, index), splits are disjoint, and the on-disk cache is reused."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from vldac_lightning.envs.alfworld.engine import TaskInfo
from vldac_lightning.envs.alfworld.games import GeneratedGames, expert_walkthrough, planner_walkthrough
from vldac_lightning.envs.alfworld.generator import (
    SPLITS,
    TASK_TYPES,
    game_file_data,
    generate_game,
    traj_data,
)

SEEDS_PER_TYPE = 20


def solve(job: tuple[str, int, str]) -> tuple[str, str, int, bool, int, float]:
    """Generate one game (first attempt only: no retry hides an unsolvable draw) and replay the expert."""
    split, index, task_type = job
    start = time.perf_counter()
    spec = generate_game(split, index, task_type)
    plan, won = planner_walkthrough(spec.problem)
    return task_type, split, index, won, len(plan), time.perf_counter() - start


def test_every_task_type_is_solved_by_the_expert_on_20_seeds() -> None:
    # Seeds cycle through the three splits, so unseen floor plans are covered too.
    jobs = [(SPLITS[i % 3], i, t) for t in TASK_TYPES for i in range(SEEDS_PER_TYPE)]
    workers = max(1, min(4, os.cpu_count() or 1))
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        results = list(pool.map(solve, jobs, chunksize=4))
    failed = [(t, s, i) for t, s, i, won, _, _ in results if not won]
    assert not failed, f"the expert did not win: {failed}"
    per_type = Counter(t for t, *_ in results)
    assert per_type == {t: SEEDS_PER_TYPE for t in TASK_TYPES}
    steps = {t: [n for tt, _, _, _, n, _ in results if tt == t] for t in TASK_TYPES}
    assert min(steps["pick_and_place_simple"]) >= 3  # go to, take, go to, move
    assert min(steps["pick_two_obj_and_place"]) > max(steps["pick_and_place_simple"]) // 2
    assert all(min(steps[t]) >= 5 for t in TASK_TYPES[2:5])  # ... plus the appliance step


@pytest.mark.parametrize("task_type", ["look_at_obj_in_light", "pick_heat_then_place_in_recep",
                                       "pick_two_obj_and_place"])
def test_the_text_engine_agrees_with_the_fast_check(task_type: str) -> None:
    """The full TextWorld replay (admissible commands, ALFWorld wrappers) wins with the same plan."""
    spec = generate_game("valid_unseen", 5, task_type)
    fast = planner_walkthrough(spec.problem)
    full = expert_walkthrough(game_file_data(spec), TaskInfo.from_traj(traj_data(spec)))
    assert fast == full and full[1]


@pytest.mark.parametrize("task_type", TASK_TYPES)
def test_generation_is_reproducible_and_type_consistent(task_type: str) -> None:
    a, b = generate_game("train", 7, task_type), generate_game("train", 7, task_type)
    assert a == b and a.problem == b.problem
    assert generate_game("train", 8, task_type).problem != a.problem
    assert a.task_type == task_type and a.object_target.lower() in a.goal_text
    placed = {oid: home for oid, otype, home in a.objects if otype == a.object_target}
    recep_type = dict(a.receptacles)
    if a.parent_target:  # no goal holds at the start
        assert all(recep_type[home] != a.parent_target for home in placed.values())
    if task_type == "pick_two_obj_and_place":
        assert len(placed) >= 2
    if task_type == "look_at_obj_in_light":
        assert a.toggle_target in ("DeskLamp", "FloorLamp") and f"(toggleable {a.toggle_target}_bar_01)" in a.problem


def test_splits_are_disjoint_and_unseen_uses_held_out_floor_plans() -> None:
    games = {s: [generate_game(s, i) for i in range(60)] for s in SPLITS}
    problems = {s: {g.problem.split("\n", 1)[1] for g in gs} for s, gs in games.items()}  # minus the name line
    assert not problems["train"] & problems["valid_seen"]
    assert not problems["train"] & problems["valid_unseen"]
    plans = {s: {g.floor_plan for g in gs} for s, gs in games.items()}
    assert not plans["valid_unseen"] & (plans["train"] | plans["valid_seen"])
    assert plans["valid_unseen"] <= set(range(1, 7)) | set(range(201, 207)) | set(range(301, 307)) | set(range(401, 407))
    assert Counter(g.task_type for g in games["train"]) == {t: 10 for t in TASK_TYPES}  # balanced


def test_cache_writes_the_official_layout_and_is_reused(tmp_path: Path) -> None:
    games = GeneratedGames(tmp_path, "valid_seen", size=140)
    ref = games.get(140 + 3)  # indices wrap around the split size
    assert games.last_generation_s is not None and games.last_generation_s > 0
    rel = ref.path.relative_to(tmp_path)
    assert rel.parts[:2] == ("json_2.1.1", "valid_seen") and rel.name == "game.tw-pddl"
    assert rel.parts[2].startswith(f"{TASK_TYPES[3]}-")
    data = json.loads(ref.path.read_text())
    assert data["solvable"] is True and data["walkthrough"]
    assert set(data) >= {"pddl_domain", "grammar", "pddl_problem"} and "UNKNOWN GOAL" not in data["grammar"]
    assert json.loads(ref.path.with_name("traj_data.json").read_text())["task_type"] == TASK_TYPES[3]
    mtime = ref.path.stat().st_mtime_ns
    games.last_generation_s = None
    again = GeneratedGames(tmp_path, "valid_seen", size=140).get(3)
    assert again == ref and ref.path.stat().st_mtime_ns == mtime  # a cache hit: nothing regenerated


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="split"):
        generate_game("test", 0)
    with pytest.raises(ValueError, match="task_type"):
        generate_game("train", 0, "pick_and_eat")
    with pytest.raises(ValueError, match="size"):
        GeneratedGames("/tmp", "train", size=0)
