"""WebShop test fixtures. Pure-Python parts (reward, search, catalog, data loading) need only the
webshop extra; browser tests also need a Chromium binary (scripts/setup.sh installs Debian's).
scripts/test.sh (what CI runs) sets ``VLDAC_REQUIRE_WEBSHOP=1``: there a missing browser fails the
browser tests, with the install line, instead of skipping them."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

for _module in ("flask", "rapidfuzz", "playwright"):
    pytest.importorskip(_module, reason="WebShop tests need the webshop extra (scripts/setup.sh installs it)")

SMALL = {"num_products": 300, "num_eval_goals": 50, "viewport": [480, 360]}  # fast: a small catalog


@pytest.fixture(scope="session")
def chromium() -> str:
    from vldac_lightning.envs.webshop.browser import find_chromium

    try:
        return find_chromium()
    except FileNotFoundError as error:
        if os.environ.get("VLDAC_REQUIRE_WEBSHOP", "").strip().lower() in ("1", "true", "yes"):
            pytest.fail(str(error))
        pytest.skip(f"{error} (set VLDAC_REQUIRE_WEBSHOP=1 to fail instead)")


@pytest.fixture
def make_env(chromium: str) -> Iterator[Callable[..., Any]]:
    """``make_env(**kwargs)``: a WebShop language env on a small catalog (closed after the test)."""
    from vldac_lightning.envs.registry import make_language_env

    envs: list[Any] = []

    def build(env_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        env = make_language_env("webshop/WebShop-v0", env_kwargs={**SMALL, **(env_kwargs or {})}, **kwargs)
        envs.append(env)
        return env

    yield build
    for env in envs:
        env.close()
