"""EnvPool over real Gym-Cards language envs: seeds, autoreset, statistics, clean shutdown."""

from __future__ import annotations

import functools
import json
import multiprocessing

import numpy as np
import psutil
import pytest

from vldac_lightning.envs import EnvPool, eval_seeds, make_language_env, train_seeds
from vldac_lightning.envs.pool import episode_seed

NUMBERLINE = "gym_cards/NumberLine-v0"


def env_fns(n: int, env_id: str = NUMBERLINE, **kwargs: object) -> list:
    return [functools.partial(make_language_env, env_id, **kwargs) for _ in range(n)]


def worker_processes() -> list[psutil.Process]:
    """Live child processes, minus multiprocessing's resource tracker (one per parent, by design)."""
    alive = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in " ".join(child.cmdline()):
                alive.append(child)
        except psutil.NoSuchProcess:
            pass
    return alive


def answer(a: str) -> str:
    return json.dumps({"thoughts": "x", "action": a})


# --- seeds ---------------------------------------------------------------------------------
def test_seed_helpers_are_distinct_and_disjoint() -> None:
    train = [s for base in range(3) for s in train_seeds(base, 10_000)]
    evals = [s for base in range(3) for s in eval_seeds(base, 10_000)]
    assert len(set(train)) == len(train) and len(set(evals)) == len(evals)
    assert not set(train) & set(evals)
    assert (
        max(train_seeds(99_999, 10_000)) < min(eval_seeds(0, 1)) and max(eval_seeds(99_999, 10_000)) < 2**32
    )
    assert train_seeds(1, 3) == [10_000, 10_001, 10_002]
    for bad in [(-1, 2), (0, 10_001), (100_000, 1)]:
        with pytest.raises(ValueError):
            train_seeds(*bad)


def test_pool_validates_arguments() -> None:
    with pytest.raises(ValueError, match="distinct"):
        EnvPool(env_fns(2), mode="sync", seeds=[1, 1])
    with pytest.raises(ValueError, match="one seed per env"):
        EnvPool(env_fns(2), mode="sync", seeds=[1])
    with pytest.raises(ValueError, match="async"):
        EnvPool(env_fns(1), mode="threads", seeds=[1])


# --- async pool --------------------------------------------------------------------------------
def _mixed_texts(pool: EnvPool, step: int) -> tuple[list[str], list[bool]]:
    """Oracle answers, with a deterministic sprinkle of garbage (parse failures)."""
    oracle = pool.call_oracle_texts()
    garbage = [(step + i) % 4 == 0 for i in range(pool.num_envs)]
    return [("no json" if g else o) for g, o in zip(garbage, oracle)], garbage


def test_async_pool_episodes_and_stats() -> None:
    seeds = train_seeds(7, 4)
    pool = EnvPool(env_fns(4, max_episode_steps=6), mode="async", seeds=seeds)
    with pool:
        assert pool.num_envs == 4 and pool.action_names == ("-", "+")
        obs = pool.reset()
        assert len(obs) == 4 and all(o["images"].shape == (1, 300, 300, 3) for o in obs)
        running_return = np.zeros(4)
        running_fail = np.zeros(4, int)
        episodes = []
        for t in range(30):
            texts, garbage = _mixed_texts(pool, t)
            out = pool.step(texts)
            running_return += out.rewards
            running_fail += garbage
            assert out.rewards.dtype == np.float32 and out.terminated.dtype == bool
            for ep in out.episodes:
                i = ep.env_index
                info = out.infos[i]
                # The final info of the finished episode (a reset info would have length 0).
                assert info["episode_length"] == ep.length > 0
                assert (
                    ep.episode_return
                    == pytest.approx(running_return[i])
                    == pytest.approx(info["episode_return"])
                )
                assert ep.parse_failures == running_fail[i]
                assert ep.invalid_actions >= ep.parse_failures
                assert ep.success == info["success"] == (ep.episode_return > 0)
                assert ep.seed == episode_seed(seeds[i], ep.episode_index)
                assert out.final_obs[i] is not None and out.final_obs[i]["images"].shape == (1, 300, 300, 3)
                # SAME_STEP: the returned observation already belongs to the next episode.
                # (A terminated NumberLine shows current == target, a fresh deal never does.)
                if out.terminated[i]:
                    assert not np.array_equal(out.final_obs[i]["images"], out.obs[i]["images"])
                running_return[i], running_fail[i] = 0.0, 0
                episodes.append(ep)
            for i in np.flatnonzero(~out.done):
                assert out.final_obs[i] is None
        assert len(episodes) >= 8
        assert {ep.env_index for ep in episodes} == {0, 1, 2, 3}
        assert any(ep.success for ep in episodes)
        per_env = [[ep.episode_index for ep in episodes if ep.env_index == i] for i in range(4)]
        assert all(idx == list(range(len(idx))) for idx in per_env)
    assert not multiprocessing.active_children()
    assert not worker_processes()
    pool.close()  # idempotent


def test_reset_with_same_seeds_replays_and_seeds_differ_across_copies() -> None:
    with EnvPool(env_fns(4), mode="async", seeds=train_seeds(0, 4)) as pool:
        first = [o["text"] + str(o["images"].sum()) for o in pool.reset()]
        again = [o["text"] + str(o["images"].sum()) for o in pool.reset()]
        assert first == again
        other = [o["text"] + str(o["images"].sum()) for o in pool.reset(eval_seeds(0, 4))]
        assert other != first
    assert not multiprocessing.active_children() and not worker_processes()


# --- sync == async ---------------------------------------------------------------------------------
def _scripted_run(mode: str) -> list[tuple]:
    rng = np.random.default_rng(0)
    choices = [answer("+"), answer("-"), "garbage", answer("=")]
    trace = []
    with EnvPool(env_fns(3, "gym_cards/EZPoints-v0"), mode=mode, seeds=[11, 12, 13]) as pool:
        obs = pool.reset()
        trace.append(tuple((o["text"], o["images"].tobytes()) for o in obs))
        for _ in range(12):
            texts = [choices[k] for k in rng.integers(len(choices), size=3)]
            out = pool.step(texts)
            trace.append(
                (
                    tuple(o["text"] for o in out.obs),
                    tuple(o["images"].tobytes() for o in out.obs),
                    out.rewards.tolist(),
                    out.done.tolist(),
                    tuple((e.env_index, e.episode_return, e.length) for e in out.episodes),
                )
            )
    return trace


def test_sync_equals_async() -> None:
    sync_trace = _scripted_run("sync")
    assert sync_trace == _scripted_run("async")
    assert not multiprocessing.active_children() and not worker_processes()
