"""One ALFWorld TextWorld game at a time, with the state the language env needs.

The engine is TextWorld's ``PddlEnv`` wrapped in ALFWorld's own ``AlfredDemangler`` (ids such
as ``Cabinet_bar_03`` become "cabinet 3") and ``AlfredInfos``, as ``AlfredTWEnv.init_env``
builds it. On top it reads the PDDL facts to report where the agent is, what it sees and holds,
and ALFRED's goal-condition counts per task type (``alfworld/env/tasks.py`` defines them for
THOR; here they are computed from the same predicates in the text engine).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from .generator import _ensure_alfworld_data

__all__ = ["AlfredEngine", "EngineState", "TaskInfo", "install_translation_cache"]


@lru_cache(maxsize=1)
def install_translation_cache(maxsize: int = 32) -> None:
    """Memoise Fast Downward's PDDL → SAS translation inside this process.

    TextWorld translates a game's PDDL twice per ``PddlState`` (plain + optimised for replanning)
    and builds a state on ``load`` *and* on every ``reset``; the planner check builds one more. The
    translation is a pure function of its text arguments and PddlState only reads the returned
    task, so caching it turns the 6 translations a new game cost into 2, and a replayed game's
    reset (evaluation seeds repeat) into none. Also restores ``sys.argv``, which the translator
    overwrites.
    """
    import fast_downward

    translate = fast_downward.pddl2sas

    @lru_cache(maxsize=maxsize)
    def pddl2sas(domain: str, problem: str, verbose: bool = False, optimize: bool = False) -> Any:
        argv = sys.argv
        try:
            return translate(domain, problem, verbose=verbose, optimize=optimize)
        finally:
            sys.argv = argv

    fast_downward.pddl2sas = pddl2sas


@dataclass(frozen=True)
class TaskInfo:
    """What a game asks for (from its ``traj_data.json``)."""

    task_type: str
    object_target: str
    parent_target: str = ""
    toggle_target: str = ""

    @classmethod
    def from_traj(cls, traj: Mapping[str, Any]) -> TaskInfo:
        p = traj.get("pddl_params", {})
        return cls(str(traj.get("task_type", "unknown")), str(p.get("object_target") or ""),
                   str(p.get("parent_target") or ""), str(p.get("toggle_target") or ""))


@dataclass
class EngineState:
    """The game after a reset or step."""

    feedback: str
    admissible_commands: list[str]
    won: bool
    goal: str  # "Your task is to: ..."
    location: str  # receptacle name the agent stands at, or "the middle of the room"
    visible: list[str]  # objects in/on the receptacle(s) here that are open or not openable
    inventory: list[str]
    goal_conditions: tuple[int, int] = (0, 1)  # (satisfied, total)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def goal_condition_rate(self) -> float:
        s, t = self.goal_conditions
        return s / t if t else 0.0


def _args(fact: Any) -> list[str]:
    return [v.name.lower() for v in fact.arguments]


class AlfredEngine:
    """Load a ``game.tw-pddl`` (path or dict), reset, step with a command, ask the planner expert."""

    def __init__(self) -> None:
        _ensure_alfworld_data()
        install_translation_cache()
        import textworld
        from alfworld.agents.environment.alfred_tw_env import AlfredDemangler, AlfredInfos
        from textworld.envs import PddlEnv

        infos = textworld.EnvInfos(admissible_commands=True, won=True, extras=["gamefile"])
        self._pddl_env = PddlEnv(infos)
        self._env = AlfredInfos(AlfredDemangler(self._pddl_env, shuffle=False))
        self.task: TaskInfo | None = None
        self.goal = ""
        self._state: Any = None

    def load(self, game: str | Path | Mapping[str, Any], task: TaskInfo | None = None) -> None:
        """Load a game; its task defaults to the ``traj_data.json`` beside the file."""
        if isinstance(game, Mapping):
            self._env.load(dict(game))
        else:
            path = Path(game)
            self._env.load(str(path))
            traj = path.with_name("traj_data.json")
            if task is None and traj.is_file():
                task = TaskInfo.from_traj(json.loads(traj.read_text()))
        self.task = task

    def reset(self) -> EngineState:
        self._state = self._env.reset()
        feedback = str(self._state.feedback)
        # The intro ends with "Your task is to: <goal>." (the grammar's #task# rule).
        marker = feedback.rfind("Your task is to:")
        self.goal = feedback[marker:].strip() if marker >= 0 else ""
        return self._view()

    def step(self, command: str) -> EngineState:
        if self._state is None:
            raise RuntimeError("reset() the engine before step()")
        self._state, _, _ = self._env.step(command)
        return self._view()

    def expert_plan(self) -> list[str]:
        """The planner expert's commands from the current state (Fast Downward via TextWorld)."""
        pddl = self._pddl_env
        return list(pddl._pddl_state.replan(pddl._entity_infos))

    def close(self) -> None:
        self._env.close()

    # ------------------------------------------------------------------------------ state view
    def _view(self) -> EngineState:
        st = self._state
        infos = st["_entity_infos"]
        names = {k.lower(): info.name for k, info in infos.items()}
        facts = [(f.name.lower(), _args(f)) for f in st["_facts"]]
        by = {}
        for name, args in facts:
            by.setdefault(name, []).append(args)
        here = {a[1] for a in by.get("atlocation", [])}
        recs_here = [a[0] for a in by.get("receptacleatlocation", []) if a[1] in here]
        openable = {a[0] for a in by.get("openable", [])}
        opened = {a[0] for a in by.get("opened", [])}
        visible = sorted(
            names.get(a[0], a[0]) for a in by.get("inreceptacle", [])
            if a[1] in recs_here and (a[1] not in openable or a[1] in opened)
        )
        location = ", ".join(sorted(names.get(r, r) for r in recs_here)) or "the middle of the room"
        inventory = sorted(names.get(a[1], a[1]) for a in by.get("holds", []))
        return EngineState(
            feedback=str(st.feedback).strip(),
            admissible_commands=list(st["admissible_commands"]),
            won=bool(st["won"]),
            goal=self.goal,
            location=location,
            visible=visible,
            inventory=inventory,
            goal_conditions=self._goal_conditions(by, here),
        )

    def _goal_conditions(self, by: dict[str, list[list[str]]], here: set[str]) -> tuple[int, int]:
        """ALFRED's (satisfied, total) goal conditions of the task type (alfworld/env/tasks.py)."""
        task = self.task
        if task is None:
            return (0, 1)
        otype = {a[0]: a[1] for a in by.get("objecttype", [])}
        rtype = {a[0]: a[1] for a in by.get("receptacletype", [])}
        targets = {o for o, t in otype.items() if t == f"{task.object_target.lower()}type"}
        parents = {r for r, t in rtype.items() if t == f"{task.parent_target.lower()}type"}
        placed = [(o, r) for o, r in by.get("inreceptacle", []) if o in targets and r in parents]
        placed_objs = {o for o, _ in placed}
        if task.task_type == "pick_and_place_simple":
            return (int(bool(placed)), 1)
        if task.task_type == "pick_two_obj_and_place":
            per_recep: dict[str, int] = {}
            for _, r in placed:
                per_recep[r] = per_recep.get(r, 0) + 1
            return (min(max(per_recep.values(), default=0), 2), 2)
        if task.task_type == "look_at_obj_in_light":
            held = {a[1] for a in by.get("holds", [])}
            lamps = {o for o, t in otype.items() if t == f"{task.toggle_target.lower()}type"}
            toggled = {a[0] for a in by.get("istoggled", [])}
            recs_here = {a[0] for a in by.get("receptacleatlocation", []) if a[1] in here}
            lamp_on_here = any(o in lamps and o in toggled and r in recs_here for o, r in by.get("inreceptacle", []))
            return (int(bool(held & targets)) + int(lamp_on_here), 2)
        changed_pred = {"pick_clean_then_place_in_recep": "isclean", "pick_heat_then_place_in_recep": "ishot",
                        "pick_cool_then_place_in_recep": "iscool"}.get(task.task_type)
        if changed_pred is None:
            return (0, 1)
        changed = {a[0] for a in by.get(changed_pred, [])} & targets
        return (int(bool(placed_objs)) + int(bool(changed)) + int(bool(placed_objs & changed)), 3)
