"""Game files on disk: the generated-game cache and the official ALFWorld dataset.

Both use the official layout, ``<root>/json_2.1.1/<split>/<task dir>/<trial dir>/game.tw-pddl``
beside a ``traj_data.json``, so the code that reads the real dataset also reads (and tests with)
generated games:

* :class:`GeneratedGames` — game ``i`` of a split is generated on first use (see
  :mod:`.generator`), checked solvable by the planner expert (:func:`planner_walkthrough`: its
  plan must reach the goal) and cached under ``root`` with that walkthrough.
  No index file is kept: the directory name is a pure function of the generated scene, so a
  lookup regenerates the scene (milliseconds, no engine) and finds its file.
* :class:`OfficialGames` — walks ``$ALFWORLD_DATA/json_2.1.1/<split>`` for solvable games as
  ``alfworld.agents.environment.AlfredTWEnv.collect_game_files`` does (skipping movable/sliced
  trials, unsolvable or unchecked games).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from .engine import TaskInfo
from .generator import (
    SPLITS,
    TASK_TYPES,
    GameSpec,
    _ensure_alfworld_data,
    _tables,
    game_dir_name,
    game_file_data,
    generate_game,
    traj_data,
)

__all__ = [
    "DATASET_DIR",
    "planner_walkthrough",
    "GameRef",
    "GeneratedGames",
    "OfficialGames",
    "SolvabilityError",
    "expert_walkthrough",
    "has_official_data",
]

DATASET_DIR = "json_2.1.1"  # the official dataset's folder under $ALFWORLD_DATA
_MAX_ATTEMPTS = 5


class SolvabilityError(RuntimeError):
    """The expert could not solve a generated game."""


@dataclass(frozen=True)
class GameRef:
    """One game file and its task type."""

    path: Path
    task_type: str


def _write_json(path: Path, data: Any) -> None:
    """Atomic write: pool workers may generate the same game at the same time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


@lru_cache(maxsize=1)
def _checker() -> Any:
    from .engine import AlfredEngine

    return AlfredEngine()  # one per process: building it costs ≈ 1.5 s


def expert_walkthrough(game: Mapping[str, Any] | str | Path, task: TaskInfo | None = None) -> tuple[list[str], bool]:
    """The planner expert's plan for a game, replayed in the TextWorld engine: (commands, won).

    The plan is what ALFWorld's ``AlfredExpert(expert_type="planner")`` reads (TextWorld's
    ``PddlState.replan``, i.e. Fast Downward on the game's PDDL). ``alfworld-generate`` stops at
    "a plan exists"; here each command is also played, must be admissible, and the last must win.
    """
    engine = _checker()
    engine.load(game, task)
    state = engine.reset()
    plan = engine.expert_plan()
    if not plan:
        return [], False
    for command in plan:
        if command not in state.admissible_commands:
            return plan, False
        state = engine.step(command)
    return plan, bool(state.won)


@lru_cache(maxsize=1)
def _planner() -> tuple[Any, Any]:
    _ensure_alfworld_data()
    import fast_downward
    from textworld.envs.pddl import logic as pddl_logic

    from .engine import install_translation_cache

    install_translation_cache()
    tables = _tables()
    # The goal sentence only changes text, never the logic: one parse of domain + grammar serves all.
    return fast_downward.load_lib(), pddl_logic.GameLogic(domain=tables.domain, grammar=tables.grammar)


def planner_walkthrough(problem: str) -> tuple[list[str], bool]:
    """The planner expert's plan, applied in the engine's PDDL state: (commands, goal reached).

    The same Fast Downward plan ``AlfredExpert(expert_type="planner")`` follows (``PddlState.replan``),
    each operator then applied to the state (it must be applicable) and the goal checked at the
    end — the engine's own transition function without its text rendering, ≈ 3× cheaper than
    :func:`expert_walkthrough`. Commands are ALFWorld's ("go to cabinet 3", ...).
    """
    from types import SimpleNamespace

    import fast_downward
    from alfworld.agents.utils.misc import Demangler
    from textworld.envs.pddl import logic as pddl_logic
    from textworld.generator.game import EntityInfo

    lib, logic = _planner()
    state = pddl_logic.PddlState(lib, problem, logic)
    infos = {v.name: EntityInfo(v.name, v.type) for fact in state.facts for v in fact.arguments}
    demangler = Demangler(game_infos=infos)
    for info in infos.values():
        info.name = demangler.demangle_alfred_name(info.id)
    if not lib.replan(False):
        return [], False
    operators = (fast_downward.Operator * lib.get_last_plan_length())()
    lib.get_last_plan(operators)
    plan = [op.name for op in operators]
    commands = state.plan_to_templated_actions(plan, infos)
    for step in plan:
        state.all_applicable_actions()
        op = next((o for o in state._operators.values() if o.name == step), None)
        if op is None:
            return commands, False
        state.apply(SimpleNamespace(id=op.id))
    return commands, bool(state.check_goal())


class GeneratedGames:
    """Generated games of one split under ``root`` (created, checked and cached on first use)."""

    def __init__(self, root: str | Path, split: str, size: int, task_types: tuple[str, ...] = TASK_TYPES) -> None:
        if split not in SPLITS:
            raise ValueError(f"split={split!r} is not valid; choose one of {list(SPLITS)}")
        if size < 1:
            raise ValueError(f"the {split} split needs at least one game, got size={size}")
        bad = [t for t in task_types if t not in TASK_TYPES]
        if bad or not task_types:
            raise ValueError(f"task_types {bad or '[]'} are not valid; choose from {list(TASK_TYPES)}")
        self.root = Path(root)
        self.split = split
        self.size = int(size)
        self.task_types = tuple(task_types)
        self.last_generation_s: float | None = None  # time of the last cache miss (generation + check)

    def __len__(self) -> int:
        return self.size

    def spec(self, index: int, attempt: int = 0) -> GameSpec:
        # Task types cycle with the index so every split is balanced across them.
        task_type = self.task_types[index % len(self.task_types)]
        return generate_game(self.split, index, task_type, attempt=attempt)

    def game_dir(self, spec: GameSpec) -> Path:
        return self.root / DATASET_DIR / self.split / game_dir_name(spec) / f"trial_{self.split}_{spec.index:06d}"

    def get(self, index: int) -> GameRef:
        """Game ``index % size`` (generated and checked on first use)."""
        index = int(index) % self.size
        for attempt in range(_MAX_ATTEMPTS):
            spec = self.spec(index, attempt)
            path = self.game_dir(spec) / "game.tw-pddl"
            if path.is_file():
                data = json.loads(path.read_text())
                if data.get("solvable"):
                    return GameRef(path, spec.task_type)
                continue  # a cached unsolvable attempt: try the next one
            start = time.perf_counter()
            data = game_file_data(spec)
            walkthrough, won = planner_walkthrough(spec.problem)
            data["walkthrough"] = walkthrough if won else None
            data["solvable"] = bool(won)
            _write_json(path.with_name("traj_data.json"), traj_data(spec))
            _write_json(path, data)
            self.last_generation_s = time.perf_counter() - start
            if won:
                return GameRef(path, spec.task_type)
        raise SolvabilityError(f"no solvable game for {self.split}/{index} in {_MAX_ATTEMPTS} attempts")


def has_official_data(root: str | Path | None) -> bool:
    """True when ``root`` holds the official dataset's layout (``json_2.1.1/train``)."""
    return root is not None and (Path(root) / DATASET_DIR / "train").is_dir()


class OfficialGames:
    """The solvable games of one split of the official ALFWorld dataset (``$ALFWORLD_DATA``)."""

    def __init__(self, root: str | Path, split: str, task_types: tuple[str, ...] = TASK_TYPES) -> None:
        if split not in SPLITS:
            raise ValueError(f"split={split!r} is not valid; choose one of {list(SPLITS)}")
        self.root = Path(root)
        self.split = split
        split_dir = self.root / DATASET_DIR / split
        if not split_dir.is_dir():
            raise FileNotFoundError(
                f"no ALFWorld split at {split_dir}; point env.env_kwargs.data_dir (or $ALFWORLD_DATA) at the "
                f"directory holding {DATASET_DIR}/, or use env.env_kwargs.source=generated"
            )
        games = []
        for traj_path in sorted(split_dir.glob("**/traj_data.json")):
            trial = traj_path.parent
            if "movable" in str(trial) or "Sliced" in str(trial):
                continue  # not supported by ALFWorld's text engine either
            game_path = trial / "game.tw-pddl"
            if not game_path.is_file():
                continue
            task_type = json.loads(traj_path.read_text()).get("task_type")
            if task_type not in task_types:
                continue
            if not json.loads(game_path.read_text()).get("solvable"):
                continue
            games.append(GameRef(game_path, str(task_type)))
        if not games:
            raise FileNotFoundError(f"no solvable games of task types {list(task_types)} under {split_dir}")
        self.games = games
        self.size = len(games)

    def __len__(self) -> int:
        return self.size

    def get(self, index: int) -> GameRef:
        return self.games[int(index) % self.size]
