"""Self-healing and resumable EnvPool: real worker processes are killed, hung and crashed."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

import numpy as np
import psutil
import pytest

from tests.envs.faulty import HANG, RAISE, SEGFAULT, make_broken, make_faulty
from tests.envs.test_pool import worker_processes
from vldac_lightning.envs import EnvPool, train_seeds
from vldac_lightning.envs.pool import EnvPoolError, episode_seed


def _wait_dead(pid: int, timeout: float = 10.0) -> None:
    """Wait until a killed worker is a zombie (without reaping it: that is its parent's job)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.05)
    raise AssertionError(f"worker {pid} did not die")


@pytest.mark.parametrize("how", ["sigkill", "segfault", "exception"])
def test_a_dead_worker_is_replaced_and_its_episode_dropped(how: str) -> None:
    seeds = train_seeds(3, 3)
    with EnvPool([make_faulty] * 3, mode="async", seeds=seeds, name="faulty") as pool:
        pool.reset()
        for _ in range(2):  # with these seeds no copy reaches its target: all are mid-episode
            pool.step(["-", "-", "-"])
        before = pool.pids
        texts = ["-", "-", "-"]
        if how == "sigkill":
            os.kill(before[1], signal.SIGKILL)
            _wait_dead(before[1])
        else:
            texts[1] = SEGFAULT if how == "segfault" else RAISE
        out = pool.step(texts)
        assert out.dropped.tolist() == [False, True, False]
        assert pool.restarts == 1 and pool.dropped_episodes == 1
        assert out.rewards[1] == 0 and not out.done[1]
        assert all(ep.env_index != 1 for ep in out.episodes)  # the lost episode is not reported
        after = pool.pids
        assert after[1] != before[1] and after[0] == before[0] and after[2] == before[2]
        # The replacement plays the copy's next episode, seeded as if the lost one had ended.
        assert pool.state_dict()["episode_index"][1] == 1 and pool.state_dict()["actions"][1] == []
        # Training goes on: every copy steps, and the healthy copies kept their episodes.
        assert pool.state_dict()["actions"][0] == ["-", "-", "-"]
        for _ in range(3):
            out = pool.step(["+", "+", "+"])
            assert not out.dropped.any()
    assert not multiprocessing.active_children() and not worker_processes()


def test_a_hung_worker_times_out_and_is_replaced() -> None:
    with EnvPool([make_faulty] * 2, mode="async", seeds=[1, 2], step_timeout_s=2.0) as pool:
        pool.reset()
        start = time.monotonic()
        out = pool.step([HANG, "+"])
        assert time.monotonic() - start < 30  # 2 s timeout + a fresh worker's start-up
        assert out.dropped.tolist() == [True, False] and pool.restarts == 1
        assert pool.step(["+", "+"]).rewards.shape == (2,)
    assert not worker_processes()


def test_sync_mode_heals_exceptions_too() -> None:
    with EnvPool([make_faulty] * 2, mode="sync", seeds=[1, 2]) as pool:
        pool.reset()
        out = pool.step([RAISE, "+"])
        assert out.dropped.tolist() == [True, False] and pool.restarts == 1
        assert not pool.step(["+", "+"]).dropped.any()


def test_repeated_failures_stop_with_the_env_name_and_last_error() -> None:
    with EnvPool([make_broken], mode="async", seeds=[5], name="gym_cards/Broken-v0", max_restarts=2) as pool:
        pool.reset()
        with pytest.raises(EnvPoolError, match=r"gym_cards/Broken-v0.*3 times in a row.*licence server is down"):
            for _ in range(5):
                pool.step(["+"])
        assert pool.restarts == 3
    assert not multiprocessing.active_children() and not worker_processes()


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_state_dict_restores_the_exact_episodes(mode: str) -> None:
    """A fresh pool loaded from state_dict() continues exactly like the original."""
    script = [["+", "-", "oops"], ["-", "-", "+"], ["+", "+", "+"], ["-", "x", "+"]]
    with EnvPool([make_faulty] * 3, mode=mode, seeds=[7, 8, 9]) as pool:
        pool.reset()
        for texts in script[:3]:
            pool.step(texts)
        state = pool.state_dict()
        expected = pool.step(script[3])
    with EnvPool([make_faulty] * 3, mode=mode, seeds=[0, 1, 2]) as other:
        restored = other.load_state_dict(state)
        assert restored is not None and len(restored) == 3
        got = other.step(script[3])
    assert [o["text"] for o in got.obs] == [o["text"] for o in expected.obs]
    assert all(np.array_equal(a["images"], b["images"]) for a, b in zip(got.obs, expected.obs))
    assert got.rewards.tolist() == expected.rewards.tolist() and got.done.tolist() == expected.done.tolist()
    assert [(e.env_index, e.seed, e.episode_return, e.length) for e in got.episodes] == \
           [(e.env_index, e.seed, e.episode_return, e.length) for e in expected.episodes]


def test_episode_seeds_are_reproducible_and_stay_in_their_range() -> None:
    assert episode_seed(42, 0) == 42
    later = [episode_seed(42, j) for j in range(1, 200)]
    assert later == [episode_seed(42, j) for j in range(1, 200)] and len(set(later)) == 199
    assert all(0 <= s < 1_000_000_000 for s in later)
    assert all(1_000_000_000 <= episode_seed(1_000_000_007, j) < 2_000_000_000 for j in range(1, 50))


def test_load_state_dict_rejects_a_different_pool_size() -> None:
    with EnvPool([make_faulty] * 2, mode="sync", seeds=[1, 2]) as pool:
        pool.reset()
        state = pool.state_dict()
    with EnvPool([make_faulty] * 3, mode="sync", seeds=[1, 2, 3]) as other:
        with pytest.raises(EnvPoolError, match="same env.num_envs"):
            other.load_state_dict(state)


def test_collector_masks_out_the_episode_a_crash_dropped(make_policy) -> None:  # type: ignore[no-untyped-def]
    """The crashed copy's unfinished episode leaves the batch (valid False, cut for GAE); the
    other copy's steps all stay."""
    from tests.envs import faulty
    from vldac_lightning.rollout.collector import RolloutCollector

    faulty.FlakyEnv.failed = False
    policy = make_policy()
    with EnvPool([faulty.make_flaky, faulty.make_faulty], mode="sync", seeds=[3, 4]) as pool:
        collector = RolloutCollector(pool, policy, steps_per_env=6)
        rollout, stats = collector.collect()
    assert faulty.FlakyEnv.failed and stats.dropped_episodes == 1 and pool.restarts == 1
    valid = rollout.valid
    assert valid is not None and valid[:, 1].all()
    crash = 2  # the flaky copy's third step
    assert not valid[crash, 0] and rollout.terminated[crash, 0] and rollout.rewards[crash, 0] == 0
    # Every step of the dropped episode before the crash is out, every later step is in.
    done = (rollout.terminated | rollout.truncated)[:crash, 0].nonzero().flatten().tolist()
    first = done[-1] + 1 if done else 0
    assert not valid[first : crash + 1, 0].any() and valid[:first, 0].all() and valid[crash + 1 :, 0].all()
    assert stats.metrics()["rollout/dropped_episodes"] == 1.0
    assert stats.metrics()["rollout/env_restarts"] == 1.0
