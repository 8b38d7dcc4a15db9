"""Fuzz: >= 10,000 hostile outputs through every env's parser and step — no crash, every answer
counted as a parse failure or a valid action, memory flat."""

from __future__ import annotations

import gc
import math
import os
from collections import Counter

import psutil
import pytest

from tests.envs.fuzz_outputs import CATEGORIES, hostile_outputs
from vldac_lightning.envs.parsing import parse_action
from vldac_lightning.envs.registry import ENV_REGISTRY, make_language_env

N_OUTPUTS = 10_000  # through step() (which parses) in the JSON mode every env defaults to
N_ACTION_ONLY = 2_000  # the constrained-decoding mode's parser is a strict lookup: fewer suffice
# Simulators slower than ~1,000 steps/s step a sample of the outputs; all are still parsed.
STEPS_PER_ENV = {"miniworld": 300, "alfworld": 300, "webshop": 120}
# JSON answers that are commands rather than action_names (ALFWorld and WebShop number their
# commands only for constrained decoding): "look"/"inventory" are always admissible in ALFWorld;
# WebShop's search is valid on its first page, these buttons on the pages after it.
JSON_COMMANDS = {"alfworld": ("look", "inventory"),
                 "webshop": ("search[shoes]", "click[back to search]", "click[next >]", "click[< prev]")}


def _steps_for(env_id: str, n: int) -> int:
    return min(n, next((k for prefix, k in STEPS_PER_ENV.items() if env_id.startswith(prefix)), n))


def _make(env_id: str, response_mode: str):  # type: ignore[no-untyped-def]
    try:
        return make_language_env(env_id, response_mode=response_mode)
    except (ImportError, ModuleNotFoundError) as error:  # an optional simulator that is not installed
        pytest.skip(f"{env_id}: {error}")


@pytest.mark.parametrize("response_mode", ["json", "action_only"])
@pytest.mark.parametrize("env_id", sorted(ENV_REGISTRY))
def test_hostile_outputs_never_crash_an_env(env_id: str, response_mode: str) -> None:
    env = _make(env_id, response_mode)
    family = env_id.split("/")[0]
    names = tuple(getattr(env, "action_names", ()))
    if response_mode == "json" and family in JSON_COMMANDS:
        names = JSON_COMMANDS[family]
    process = psutil.Process(os.getpid())
    outcomes: Counter[str] = Counter()
    n = N_OUTPUTS if response_mode == "json" else N_ACTION_ONLY
    stride = n // _steps_for(env_id, n)
    steps = -(-n // stride)  # outputs i with i % stride == 0
    try:
        env.reset(seed=0)
        rss_before = None
        for i, (category, text) in enumerate(hostile_outputs(n, names, seed=len(env_id))):
            if i == n // 10:  # after warm-up (caches, lazy imports, allocator pools)
                gc.collect()
                rss_before = process.memory_info().rss
            if stride > 1:  # a slow simulator: every output is parsed, a sample is stepped
                result = parse_action(text, names, mode=response_mode)
                assert isinstance(result.parse_ok, bool) and isinstance(result.action_valid, bool)
                assert not result.action_valid or result.action in names
                if i % stride:
                    continue
            _, reward, terminated, truncated, info = env.step(text)
            assert math.isfinite(reward), (category, text[:200])
            assert isinstance(info["parse_ok"], bool) and isinstance(info["action_valid"], bool)
            outcomes["valid" if info["action_valid"] else "parse_failure" if not info["parse_ok"] else "invalid"] += 1
            if terminated or truncated:
                env.reset()
        gc.collect()
        growth = process.memory_info().rss - rss_before
    finally:
        env.close()
    assert sum(outcomes.values()) == steps
    assert outcomes["valid"] > 0 and outcomes["parse_failure"] + outcomes["invalid"] > 0
    assert growth < 50 * 2**20, f"RSS grew by {growth / 2**20:.1f} MiB over {n} hostile outputs"


def test_the_generator_covers_every_category() -> None:
    seen = Counter(category for category, _ in hostile_outputs(len(CATEGORIES) * 3, ("+", "-")))
    assert set(seen) == set(CATEGORIES)
    texts = [t for _, t in hostile_outputs(200, ("+", "-"))]
    assert max(len(t) for t in texts) >= 1_000_000 and "" in texts
