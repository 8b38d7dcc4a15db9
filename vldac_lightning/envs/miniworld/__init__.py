"""MiniWorld (Farama ``miniworld``): the paper's four 3-D "go to the red box" tasks, headless.

Importing this package is light (no pyglet, no OpenGL): the simulator loads, headless, when the
first env is made. It registers ``miniworld/<Task>-v0`` with gymnasium for the four tasks in
:data:`TASKS`; the language ids in ``envs.registry`` are the same strings.
"""

from __future__ import annotations

import gymnasium as gym

from .headless import APT_PACKAGES, MiniWorldUnavailable, ensure_headless, import_miniworld
from .nav import ACTION_MEANINGS, TASKS, MiniWorldNav

__all__ = [
    "ACTION_MEANINGS",
    "APT_PACKAGES",
    "ENV_IDS",
    "TASKS",
    "MiniWorldNav",
    "MiniWorldUnavailable",
    "ensure_headless",
    "import_miniworld",
    "render_problem",
]

ENV_IDS: tuple[str, ...] = tuple(f"miniworld/{task}-v0" for task in TASKS)

for _task, _env_id in zip(TASKS, ENV_IDS):
    if _env_id not in gym.registry:
        gym.register(id=_env_id, entry_point=f"{__name__}.nav:MiniWorldNav", kwargs={"task": _task})


def render_problem() -> str | None:
    """None if a MiniWorld env renders here (headless), else what is missing and how to install it.

    Builds and resets one small env: the only reliable test of the whole GL stack (package,
    pyglet, libEGL/libGL, Mesa's driver). Used by the test suite and ``python -m vldac_lightning.doctor``.
    """
    try:
        env = MiniWorldNav("OneRoom", obs_width=16, obs_height=12)
        try:
            env.reset(seed=0)
        finally:
            env.close()
    except MiniWorldUnavailable as e:
        return str(e)
    return None
