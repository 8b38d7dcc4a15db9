"""Skip MiniWorld tests only where OpenGL/EGL or the package is truly absent.

scripts/test.sh (what CI runs) sets ``VLDAC_REQUIRE_MINIWORLD=1``: there a missing GL stack is a
failure, with the message that says what to install, not a silent skip.
"""

from __future__ import annotations

import os
from functools import lru_cache

import pytest


@lru_cache(maxsize=1)
def miniworld_problem() -> str | None:
    """None if a MiniWorld env renders headless here, else why not (probed once per process)."""
    from vldac_lightning.envs.miniworld import render_problem

    return render_problem()


def require_miniworld() -> None:
    """Skip the calling test (or fail, under VLDAC_REQUIRE_MINIWORLD=1) when MiniWorld cannot render."""
    problem = miniworld_problem()
    if problem is None:
        return
    if os.environ.get("VLDAC_REQUIRE_MINIWORLD", "").strip().lower() in ("1", "true", "yes"):
        pytest.fail(problem)
    pytest.skip(f"MiniWorld unavailable (set VLDAC_REQUIRE_MINIWORLD=1 to fail instead): {problem}")
