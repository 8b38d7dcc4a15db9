"""Procedural ALFWorld games: seeded household scenes and goals of the six task types.

A generated game is an ALFWorld TextWorld game file (``game.tw-pddl``: JSON holding the PDDL
domain, the TextWorld grammar with the task sentence filled in, a PDDL *problem* and the
``solvable`` flag), exactly what ``alfworld-generate`` writes for the official dataset. The
domain, grammar, goal formulas, goal sentences, object/receptacle tables and the 120 THOR floor
plans' object lists all come from the ``alfworld`` wheel; this module only draws a scene:

* a floor plan (split ``train``/``valid_seen``: ALFRED's 96 training floor plans;
  ``valid_unseen``: its 24 held-out ones), its static receptacle types with 1..k instances each
  (cabinets, drawers, shelves, countertops, fridge, microwave, sink basin, tables, ...);
* the task's objects and distractors, each placed in a receptacle that ``canContain`` it, with
  the type predicates (pickupable, heatable, coolable, cleanable, sliceable, toggleable) from
  ALFRED's ``VAL_ACTION_OBJECTS``; desk/floor lamps for the light task;
* a goal of the requested type whose object and target receptacle exist in the scene and whose
  target does not already hold the object (so no goal is satisfied at the start).

Every draw comes from ``random.Random`` keyed by (split, index, attempt), so a game is
reproducible from its index alone. :mod:`.games` checks each game with the planner expert and
caches it on disk.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = [
    "GENERATOR_VERSION",
    "SPLITS",
    "TASK_TYPES",
    "GameSpec",
    "game_dir_name",
    "generate_game",
    "game_file_data",
    "traj_data",
]

GENERATOR_VERSION = 1  # bump when a change alters generated games (part of the cache key)

# ALFWorld's task-type ids 1..6 (alfworld.agents.environment.alfred_tw_env.TASK_TYPES).
TASK_TYPES: tuple[str, ...] = (
    "pick_and_place_simple",
    "look_at_obj_in_light",
    "pick_clean_then_place_in_recep",
    "pick_heat_then_place_in_recep",
    "pick_cool_then_place_in_recep",
    "pick_two_obj_and_place",
)
SPLITS: tuple[str, ...] = ("train", "valid_seen", "valid_unseen")

# Receptacle instances per type (ALFRED kitchens have many cabinets, one fridge, ...).
_INSTANCES: dict[str, tuple[int, int]] = {
    "Cabinet": (2, 6), "Drawer": (1, 5), "Shelf": (1, 4), "CounterTop": (1, 2), "StoveBurner": (2, 4),
    "SideTable": (1, 2), "Dresser": (1, 1), "Desk": (1, 1), "DiningTable": (1, 1),
}
_MAX_RECEPTACLES = 22  # keeps the admissible list (and the planner's grounding) small
_DISTRACTORS = (4, 10)  # extra object instances besides the task's
_STATE_CHANGE = {  # task type -> (object property, appliance receptacle type)
    "pick_clean_then_place_in_recep": ("Cleanable", "SinkBasin"),
    "pick_heat_then_place_in_recep": ("Heatable", "Microwave"),
    "pick_cool_then_place_in_recep": ("Coolable", "Fridge"),
}
_LAMPS = ("DeskLamp", "FloorLamp")
_LAMP_STANDS = ("SideTable", "Desk", "Dresser", "DiningTable", "CoffeeTable", "Shelf", "CounterTop", "TVStand")
# Constants the domain's action preconditions name; declared in every problem.
_DOMAIN_RTYPES = ("SinkBasin", "Microwave", "Fridge")
_DOMAIN_OTYPES = ("Knife", "ButterKnife")
# Aliases in the floor plans' object lists -> the receptacle ALFRED uses.
_ALIASES = {"Sink": "SinkBasin", "Bathtub": "BathtubBasin"}


def _ensure_alfworld_data() -> None:
    # alfworld creates $ALFWORLD_DATA (default ~/.cache/alfworld) on import: point it at a project
    # directory first unless the user chose one.
    os.environ.setdefault("ALFWORLD_DATA", str(Path(os.environ.get("VLDAC_ROOT", ".")) / ".cache" / "alfworld"))


@dataclass(frozen=True)
class _Tables:
    can_contain: dict[str, frozenset[str]]  # static receptacle type -> object types
    properties: dict[str, frozenset[str]]  # "Heatable"/... -> object types
    pickupable: frozenset[str]
    scenes: dict[str, tuple[int, ...]]  # split -> floor plan numbers
    layouts: dict[int, tuple[str, ...]]  # floor plan -> object types in it
    goals: dict[str, dict[str, Any]]  # task type -> {"pddl", "templates"}
    domain: str
    grammar: str


@lru_cache(maxsize=1)
def _tables() -> _Tables:
    _ensure_alfworld_data()
    try:
        import alfworld.gen.constants as constants
        import alfworld.gen.goal_library as goal_library
        from alfworld.info import ALFRED_PDDL_PATH, ALFRED_TWL2_PATH
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError(
            "env=alfworld needs the 'alfworld' and 'textworld' packages: pip install -e '.[alfworld]' "
            "(see scripts/setup.sh)"
        ) from e
    movable = set(constants.MOVABLE_RECEPTACLES)
    can_contain = {
        r: frozenset(o for o in objs if "Sliced" not in o)
        for r, objs in constants.VAL_RECEPTACLE_OBJECTS.items() if r not in movable
    }
    pickupable = frozenset().union(*can_contain.values()) - set(can_contain)
    properties = {k: frozenset(v) for k, v in constants.VAL_ACTION_OBJECTS.items()}
    layout_dir = Path(constants.__file__).parent / "layouts"
    scene_numbers = sorted(set(constants.TRAIN_SCENE_NUMBERS) | set(constants.TEST_SCENE_NUMBERS))
    layouts = {
        n: tuple(json.loads((layout_dir / f"FloorPlan{n}-objects.json").read_text()))
        for n in scene_numbers if (layout_dir / f"FloorPlan{n}-objects.json").is_file()
    }
    train = tuple(n for n in constants.TRAIN_SCENE_NUMBERS if n in layouts)
    test = tuple(n for n in constants.TEST_SCENE_NUMBERS if n in layouts)
    return _Tables(
        can_contain=can_contain,
        properties=properties,
        pickupable=pickupable,
        scenes={"train": train, "valid_seen": train, "valid_unseen": test},
        layouts=layouts,
        goals={t: goal_library.gdict[t] for t in TASK_TYPES},
        domain=Path(ALFRED_PDDL_PATH).read_text(),
        grammar=Path(ALFRED_TWL2_PATH).read_text(),
    )


@dataclass(frozen=True)
class GameSpec:
    """One generated game: its identity, scene and goal (all derived from split/index/attempt)."""

    split: str
    index: int
    attempt: int
    task_type: str
    floor_plan: int
    object_target: str
    parent_target: str | None
    toggle_target: str | None
    goal_text: str
    receptacles: tuple[tuple[str, str], ...]  # (id, type)
    objects: tuple[tuple[str, str, str], ...]  # (id, type, receptacle id)
    problem: str = field(repr=False)


def game_dir_name(spec: GameSpec) -> str:
    """The official dataset's task directory name: ``<task_type>-<Object>-<MRecep>-<Parent>-<scene>``."""
    parent = spec.parent_target or spec.toggle_target or "None"
    return f"{spec.task_type}-{spec.object_target}-None-{parent}-{spec.floor_plan}"


def _scene_types(tables: _Tables, floor_plan: int) -> tuple[set[str], set[str], set[str]]:
    """(static receptacle types, pickupable object types, lamp types) present in a floor plan."""
    names = {_ALIASES.get(n, n) for n in tables.layouts[floor_plan]}
    receptacles = {n for n in names if n in tables.can_contain}
    objects = {n for n in names if n in tables.pickupable}
    lamps = {n for n in names if n in _LAMPS}
    return receptacles, objects, lamps


def _goal_choices(tables: _Tables, task_type: str, floor_plan: int) -> list[tuple[str, str]]:
    """Every (object type, receptacle or lamp type) goal this floor plan supports for the task type."""
    receptacles, objects, lamps = _scene_types(tables, floor_plan)
    if task_type == "look_at_obj_in_light":
        if not lamps or not receptacles & set(_LAMP_STANDS):
            return []
        return [(o, lamp) for o in sorted(objects) for lamp in sorted(lamps)
                if any(o in tables.can_contain[r] for r in receptacles)]
    needs: str | None = None
    prop: frozenset[str] | None = None
    if task_type in _STATE_CHANGE:
        prop_name, needs = _STATE_CHANGE[task_type]
        prop = tables.properties[prop_name]
        if needs not in receptacles:
            return []
    out = []
    for o in sorted(objects):
        if prop is not None and o not in prop:
            continue
        # The object must start somewhere that is not the goal receptacle type (nor the appliance).
        for r in sorted(receptacles):
            if r == needs or o not in tables.can_contain[r]:
                continue
            sources = [s for s in receptacles if s not in (r, needs) and o in tables.can_contain[s]]
            if sources:
                out.append((o, r))
    return out


def _pddl_name(text: str) -> str:
    # ALFWorld's name mangling (PlannedGameState.fix_pddl_str_chars); AlfredDemangler reverses it
    # into "<type> <n>" names such as "cabinet 3".
    for a, b in (("-", "_minus_"), ("|", "_bar_"), ("+", "_plus_"), (".", "_dot_"), (",", "_comma_")):
        text = text.replace(a, b)
    return text


def _receptacle_id(rtype: str, k: int) -> str:
    if rtype == "SinkBasin":  # THOR ids "Sink|x|y|z|SinkBasin" demangle to "sinkbasin"
        return _pddl_name(f"Sink|{k:02d}|SinkBasin")
    if rtype == "BathtubBasin":
        return _pddl_name(f"Bathtub|{k:02d}|BathtubBasin")
    return _pddl_name(f"{rtype}|{k:02d}")


def generate_game(split: str, index: int, task_type: str | None = None, *, attempt: int = 0) -> GameSpec:
    """The game ``index`` of ``split`` (task type: ``TASK_TYPES[index % 6]`` unless given)."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not valid; choose one of {list(SPLITS)}")
    if index < 0:
        raise ValueError(f"index must be >= 0, got {index}")
    task_type = task_type or TASK_TYPES[index % len(TASK_TYPES)]
    if task_type not in TASK_TYPES:
        raise ValueError(f"task_type={task_type!r} is not valid; choose one of {list(TASK_TYPES)}")
    tables = _tables()
    rng = random.Random(f"vldac-alfworld/v{GENERATOR_VERSION}/{split}/{index}/{task_type}/{attempt}")

    plans = [n for n in tables.scenes[split] if _goal_choices(tables, task_type, n)]
    if not plans:  # pragma: no cover - the wheel's floor plans support every task type
        raise RuntimeError(f"no floor plan of split {split!r} supports task type {task_type!r}")
    floor_plan = rng.choice(plans)
    obj_type, target = rng.choice(_goal_choices(tables, task_type, floor_plan))
    rtypes, otypes, _ = _scene_types(tables, floor_plan)
    light = task_type == "look_at_obj_in_light"
    appliance = _STATE_CHANGE[task_type][1] if task_type in _STATE_CHANGE else None

    # --- receptacles: every static type of the floor plan, 1..k instances each, capped.
    required = {t for t in (None if light else target, appliance) if t}
    sources = sorted(s for s in rtypes if s not in required and s != target and obj_type in tables.can_contain[s])
    if light:
        required.add(rng.choice(sorted(rtypes & set(_LAMP_STANDS))))
    required.add(rng.choice(sources))
    optional = sorted(rtypes - required)
    rng.shuffle(optional)
    chosen = sorted(required) + optional[: max(0, _MAX_RECEPTACLES - len(required) - 4)]
    receptacles: list[tuple[str, str]] = []
    for rtype in sorted(chosen):
        lo, hi = _INSTANCES.get(rtype, (1, 1))
        receptacles += [(_receptacle_id(rtype, k), rtype) for k in range(1, rng.randint(lo, hi) + 1)]
    by_type: dict[str, list[str]] = {}
    for rid, rtype in receptacles:
        by_type.setdefault(rtype, []).append(rid)

    # --- objects: the task's, then distractors; each in a receptacle that can contain it.
    objects: list[tuple[str, str, str]] = []
    counts: dict[str, int] = {}

    def place(otype: str, forbidden: Sequence[str] = ()) -> None:
        homes = [rid for rid, rtype in receptacles
                 if otype in tables.can_contain[rtype] and rtype not in forbidden]
        if not homes:
            return
        counts[otype] = counts.get(otype, 0) + 1
        objects.append((_pddl_name(f"{otype}|{counts[otype]:02d}"), otype, rng.choice(homes)))

    # The goal object never starts in the goal receptacle type (or the appliance): no goal holds
    # at the start, and "cool" must not be satisfied by an object that sat in the fridge.
    forbidden = tuple(t for t in ((None if light else target), appliance) if t)
    n_task = rng.randint(2, 3) if task_type == "pick_two_obj_and_place" else rng.randint(1, 2)
    for _ in range(n_task):
        place(obj_type, forbidden)
    lamp_id = None
    if light:
        stands = [rid for rid, rtype in receptacles if rtype in _LAMP_STANDS]
        lamp_id = _pddl_name(f"{target}|01")
        objects.append((lamp_id, target, rng.choice(stands)))
    others = sorted(otypes - {obj_type})
    for _ in range(rng.randint(*_DISTRACTORS)):
        if others:
            place(rng.choice(others))

    template = rng.choice(tables.goals[task_type]["templates"])
    goal_text = template.format(obj=obj_type.lower(), recep=(target or "").lower(), toggle=(target or "").lower(),
                                mrecep="")
    spec_kwargs = dict(
        split=split, index=index, attempt=attempt, task_type=task_type, floor_plan=floor_plan,
        object_target=obj_type, parent_target=None if light else target, toggle_target=target if light else None,
        goal_text=goal_text, receptacles=tuple(receptacles), objects=tuple(objects),
    )
    problem = _problem(tables, task_type, obj_type, target, receptacles, objects, lamp_id, f"{split}_{index}")
    return GameSpec(**spec_kwargs, problem=problem)


def _problem(tables: _Tables, task_type: str, obj_type: str, target: str, receptacles: Sequence[tuple[str, str]],
             objects: Sequence[tuple[str, str, str]], lamp_id: str | None, name: str) -> str:
    """The PDDL problem (alfworld's layout: objects, types as constants, init facts, goal)."""
    locations = {rid: f"loc_bar_{i + 1}" for i, (rid, _) in enumerate(receptacles)}
    start = f"loc_bar_{len(receptacles) + 1}"
    rtypes = sorted({t for _, t in receptacles} | set(_DOMAIN_RTYPES))
    otypes = sorted({t for _, t, _ in objects} | set(_DOMAIN_OTYPES))
    decl = ["agent1 - agent"]
    decl += [f"{rid} - receptacle" for rid, _ in receptacles]
    decl += [f"{oid} - object" for oid, _, _ in objects]
    decl += [f"{loc} - location" for loc in [*locations.values(), start]]
    decl += [f"{t}Type - rtype" for t in rtypes] + [f"{t}Type - otype" for t in otypes]

    openable = {"Fridge", "Cabinet", "Microwave", "Drawer", "Safe", "Box"}
    init = ["(= (total-cost) 0)", f"(atLocation agent1 {start})"]
    for rid, rtype in receptacles:
        init += [f"(receptacleType {rid} {rtype}Type)", f"(receptacleAtLocation {rid} {locations[rid]})"]
        if rtype in openable:
            init.append(f"(openable {rid})")
    for oid, otype, home in objects:
        init += [f"(objectType {oid} {otype}Type)", f"(inReceptacle {oid} {home})",
                 f"(objectAtLocation {oid} {locations[home]})"]
        if oid == lamp_id:
            init.append(f"(toggleable {oid})")
            continue
        init.append(f"(pickupable {oid})")
        for prop, pred in (("Cleanable", "cleanable"), ("Heatable", "heatable"), ("Coolable", "coolable"),
                           ("Sliceable", "sliceable")):
            if otype in tables.properties[prop]:
                init.append(f"({pred} {oid})")
    for rtype in rtypes:
        for otype in otypes:
            if rtype in tables.can_contain and otype in tables.can_contain[rtype]:
                init.append(f"(canContain {rtype}Type {otype}Type)")

    goal = tables.goals[task_type]["pddl"].format(obj=obj_type, recep=target, toggle=target, mrecep="")
    goal = goal.replace("#", "-")  # goal_library writes types as "?x # type"
    nl = "\n        "
    return (
        f"(define (problem plan_{name})\n    (:domain alfred)\n    (:objects\n        {nl.join(decl)}\n    )\n"
        f"    (:init\n        {nl.join(init)}\n    )\n{goal}\n"
    )


def game_file_data(spec: GameSpec) -> dict[str, Any]:
    """The ``game.tw-pddl`` JSON (``solvable``/``walkthrough`` unset until the expert checks it)."""
    tables = _tables()
    return {
        "pddl_domain": tables.domain,
        # alfworld's add_task_to_grammar does this replacement with a randomly chosen template;
        # ours was chosen by the game's seeded RNG.
        "grammar": tables.grammar.replace("UNKNOWN GOAL", spec.goal_text),
        "pddl_problem": spec.problem,
        "solvable": None,
        "walkthrough": None,
    }


def traj_data(spec: GameSpec) -> dict[str, Any]:
    """The ``traj_data.json`` the official dataset stores beside each game (the fields ALFWorld reads)."""
    return {
        "task_type": spec.task_type,
        "task_id": f"generated_{spec.split}_{spec.index:06d}",
        "scene": {"floor_plan": f"FloorPlan{spec.floor_plan}", "scene_num": spec.floor_plan},
        "pddl_params": {
            "object_target": spec.object_target,
            "parent_target": spec.parent_target or "",
            "toggle_target": spec.toggle_target or "",
            "mrecep_target": "",
            "object_sliced": False,
        },
        "turk_annotations": {"anns": [{"task_desc": spec.goal_text}]},
        "generator": {"version": GENERATOR_VERSION, "split": spec.split, "index": spec.index, "attempt": spec.attempt},
    }

