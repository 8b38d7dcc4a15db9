"""ALFWorld test fixtures: every game this suite generates goes to a session temp dir (CI is a clean
clone: nothing is downloaded and no cache is assumed)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("textworld", reason="ALFWorld tests need the alfworld extra (scripts/setup.sh installs it)")
pytest.importorskip("alfworld", reason="ALFWorld tests need the alfworld extra (scripts/setup.sh installs it)")


@pytest.fixture(scope="session", autouse=True)
def alfworld_data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """$ALFWORLD_DATA for the session (alfworld creates it on import; pool workers inherit it)."""
    root = tmp_path_factory.mktemp("alfworld_data")
    old = os.environ.get("ALFWORLD_DATA")
    os.environ["ALFWORLD_DATA"] = str(root)
    yield root
    if old is None:
        os.environ.pop("ALFWORLD_DATA", None)
    else:
        os.environ["ALFWORLD_DATA"] = old


@pytest.fixture(scope="session")
def cache_dir(alfworld_data: Path) -> Path:
    return alfworld_data / "generated"


@pytest.fixture
def make_env(cache_dir: Path) -> Iterator[Callable[..., Any]]:
    """``make_env(**kwargs)``: an AlfworldEnv on generated games in the session cache (closed after the test)."""
    from vldac_lightning.envs.alfworld.env import AlfworldEnv

    envs: list[Any] = []

    def build(**kwargs: Any) -> AlfworldEnv:
        kwargs.setdefault("source", "generated")
        kwargs.setdefault("cache_dir", str(cache_dir))
        env = AlfworldEnv(**kwargs)
        envs.append(env)
        return env

    yield build
    for env in envs:
        env.close()
