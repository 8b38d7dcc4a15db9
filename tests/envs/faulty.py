"""A NumberLine language env that misbehaves on request, for the self-healing pool tests.

Module-level factories so that ``spawn`` workers can import them.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import gymnasium as gym

from vldac_lightning.envs.registry import make_language_env

RAISE, HANG, SEGFAULT = "__raise__", "__hang__", "__segfault__"


class FaultyEnv(gym.Wrapper):
    """Steps normally, except: RAISE raises, HANG sleeps for an hour, SEGFAULT kills the process
    with SIGSEGV (what a crashing C simulator does)."""

    def step(self, action: str) -> Any:
        if action == RAISE:
            raise RuntimeError("simulated simulator bug")
        if action == HANG:
            time.sleep(3600)
        if action == SEGFAULT:
            os.kill(os.getpid(), signal.SIGSEGV)
        return self.env.step(action)


def make_faulty() -> gym.Env:
    return FaultyEnv(make_language_env("gym_cards/NumberLine-v0", prompt_version="action_only",
                                       response_mode="action_only", max_episode_steps=8))


class BrokenEnv(FaultyEnv):
    """Every step fails: a copy that can never recover."""

    def step(self, action: str) -> Any:
        raise RuntimeError("the simulator's licence server is down")


def make_broken() -> gym.Env:
    return BrokenEnv(make_language_env("gym_cards/NumberLine-v0", prompt_version="action_only",
                                       response_mode="action_only"))


class FlakyEnv(FaultyEnv):
    """Raises once, on the third step of the first instance's life (in-process pools only)."""

    failed = False

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.steps = 0

    def step(self, action: str) -> Any:
        self.steps += 1
        if self.steps == 3 and not FlakyEnv.failed:
            FlakyEnv.failed = True
            raise RuntimeError("simulated one-off crash")
        return super().step(action)


def make_flaky() -> gym.Env:
    return FlakyEnv(make_language_env("gym_cards/NumberLine-v0", prompt_version="action_only",
                                      response_mode="action_only", max_episode_steps=8))
