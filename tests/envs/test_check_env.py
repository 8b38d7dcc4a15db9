"""gymnasium's own ``check_env`` passes on every registered env: native and language, MiniWorld and ALFWorld."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from tests.envs.miniworld_support import require_miniworld
from vldac_lightning.envs import registry


@pytest.fixture(scope="module")
def alfworld_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("alfworld_data")


def language_kwargs(env_id: str, alfworld_dir: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What building ``env_id`` needs here; skips (or fails) where its simulator cannot run."""
    if env_id.startswith("miniworld/"):
        require_miniworld()  # skips only where GL is missing and VLDAC_REQUIRE_MINIWORLD is unset
    hint = registry.missing_requirement(env_id)
    if hint is not None:
        pytest.skip(hint)
    if env_id.startswith("alfworld/"):
        # Generated games, one per split, cached for the module: the cheapest real ALFWorld.
        monkeypatch.setenv("ALFWORLD_DATA", str(alfworld_dir))
        return {"env_kwargs": {"source": "generated", "cache_dir": str(alfworld_dir / "generated"),
                               "split_sizes": {"train": 1, "valid_unseen": 1}}}
    return {}


def run_check_env(env: gym.Env) -> None:
    """``check_env`` with gymnasium's warnings recorded: any but the 'env is wrapped' notice fails."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env)
    notes = [str(w.message) for w in caught if "WARN:" in str(w.message)]
    unexpected = [n for n in notes if "is different from the unwrapped version" not in n
                  and "not having a spec" not in n]  # ALFWorld is built directly, not by gym.make
    assert unexpected == []


@pytest.fixture
def closing() -> Iterator[list[gym.Env]]:
    envs: list[gym.Env] = []
    yield envs
    for env in envs:
        env.close()


@pytest.mark.parametrize("env_id", registry.ENV_IDS)
def test_every_language_env_passes_check_env(env_id: str, alfworld_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                             closing: list[gym.Env]) -> None:
    env = registry.make_language_env(env_id, **language_kwargs(env_id, alfworld_dir, monkeypatch))
    closing.append(env)
    run_check_env(env)


@pytest.mark.parametrize("env_id", [i for i in registry.ENV_IDS if registry.ENV_REGISTRY[i].native_factory])
def test_every_native_env_passes_check_env(env_id: str, alfworld_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                           closing: list[gym.Env]) -> None:
    language_kwargs(env_id, alfworld_dir, monkeypatch)  # the same skips
    env = registry.make_native_env(env_id)
    closing.append(env)
    run_check_env(env)


def test_a_language_env_is_rebuilt_from_its_spec_with_the_same_options(closing: list[gym.Env]) -> None:
    env = registry.make_language_env("gym_cards/EZPoints-v0", env_kwargs={"reward_profile": "verl_agent"},
                                     image_history=3, parse_failure="penalty", max_episode_steps=7)
    copy = env.spec.make()
    closing.extend([env, copy])
    assert type(copy) is type(env)
    for name in ("game", "image_history", "parse_failure", "max_episode_steps", "response_mode", "end_penalty"):
        assert getattr(copy, name) == getattr(env, name), name
    assert copy.unwrapped.spec.kwargs.get("reward_profile") == "verl_agent"
    obs, _ = env.reset(seed=4)
    copy_obs, _ = copy.reset(seed=4)
    assert obs["text"] == copy_obs["text"] and np.array_equal(obs["images"], copy_obs["images"])


def test_an_unparseable_answer_under_penalty_returns_a_new_observation(closing: list[gym.Env]) -> None:
    # parse_failure="penalty" leaves the game unchanged: the same content, never the same object.
    env = registry.make_language_env("gym_cards/NumberLine-v0", parse_failure="penalty")
    closing.append(env)
    run_check_env(env)
    first, _ = env.reset(seed=0)
    second, *_ = env.step("not an answer")
    assert second["text"] == first["text"] and np.array_equal(second["images"], first["images"])
    assert second is not first and not np.shares_memory(second["images"], first["images"])
