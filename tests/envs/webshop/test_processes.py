"""No store server or browser outlives its env: close(), a pool's close() and a killed worker;
a pool of WebShop workers resumes exactly by replay."""

from __future__ import annotations

import json
import os
import signal
import socket

import numpy as np
import psutil
import pytest

from tests.envs.webshop.conftest import SMALL
from vldac_lightning.envs.factory import LanguageEnvThunk
from vldac_lightning.envs.pool import EnvPool, train_seeds

ENV_CFG = {"id": "webshop/WebShop-v0", "env_kwargs": SMALL, "image_history": 2, "max_episode_steps": 6,
        "parse_failure": "penalty", "parse_failure_penalty": 0.0}
SAFETY_S = 30  # a generous net only: processes end as soon as their pipes close


def browser_processes(root: psutil.Process) -> list[psutil.Process]:
    return [p for p in root.children(recursive=True) if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def assert_all_gone(processes: list[psutil.Process]) -> None:
    _, alive = psutil.wait_procs(processes, timeout=SAFETY_S)
    assert not alive, [(p.pid, p.name()) for p in alive]


def test_close_ends_the_browser_and_the_server(chromium: str) -> None:
    from vldac_lightning.envs.registry import make_language_env

    me = psutil.Process()
    before = {p.pid for p in browser_processes(me)}
    env = make_language_env("webshop/WebShop-v0", env_kwargs=SMALL)
    env.reset(seed=0)
    server = env.unwrapped._server
    spawned = [p for p in browser_processes(me) if p.pid not in before]
    assert any("chrom" in p.name() for p in spawned)  # the browser runs as our descendant
    port = int(server.url.rsplit(":", 1)[1])
    socket.create_connection(("127.0.0.1", port), timeout=SAFETY_S).close()  # the store is up
    env.close()
    assert_all_gone(spawned)
    assert not server._thread.is_alive()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=SAFETY_S)
    env.close()  # idempotent


def test_a_killed_worker_takes_its_browser_along_and_is_replaced(chromium: str) -> None:
    search = json.dumps({"thoughts": "", "action": "search[wireless earbuds]"})
    pool = EnvPool([LanguageEnvThunk(ENV_CFG, "json")] * 2, mode="async", seeds=train_seeds(0, 2))
    try:
        pool.reset()
        pool.step([search, search])
        victim = psutil.Process(pool.pids[1])
        descendants = victim.children(recursive=True)
        assert any("chrom" in p.name() for p in descendants)
        os.kill(victim.pid, signal.SIGKILL)
        assert_all_gone(descendants)  # driver and Chromium exit when the worker's pipes close
        out = pool.step([search, search])
        assert out.dropped.tolist() == [False, True] and pool.restarts == 1
        assert out.infos[0]["page"] == "results" and out.obs[1]["images"].shape[0] == 1  # a new episode
        workers = [psutil.Process(pid) for pid in pool.pids]
        everything = workers + [c for w in workers for c in w.children(recursive=True)]
    finally:
        pool.close()
    assert_all_gone(everything)


def test_a_pool_resumes_exactly_by_replay(chromium: str) -> None:
    def act(a: str) -> str:
        return json.dumps({"thoughts": "", "action": a})

    script = [[act("search[office chair]"), "junk"], [act("click[next >]"), act("search[lipstick]")],
              [act("click[< prev]"), act("click[back to search]")]]
    with EnvPool([LanguageEnvThunk(ENV_CFG, "json")] * 2, mode="sync", seeds=[3, 4]) as pool:
        pool.reset()
        for texts in script[:2]:
            pool.step(texts)
        state = pool.state_dict()
        expected = pool.step(script[2])
    with EnvPool([LanguageEnvThunk(ENV_CFG, "json")] * 2, mode="sync", seeds=[0, 1]) as other:
        assert other.load_state_dict(state) is not None
        got = other.step(script[2])
    assert [o["text"] for o in got.obs] == [o["text"] for o in expected.obs]
    assert all(np.array_equal(a["images"], b["images"]) for a, b in zip(got.obs, expected.obs))
    assert got.rewards.tolist() == expected.rewards.tolist()
    assert [i["page"] for i in got.infos] == ["results", "search"]




def test_a_crashed_browser_is_relaunched_and_its_episodes_dropped(chromium: str) -> None:
    search = json.dumps({"thoughts": "", "action": "search[green tea]"})
    with EnvPool([LanguageEnvThunk(ENV_CFG, "json")] * 2, mode="sync", seeds=[0, 1]) as pool:
        pool.reset()
        me = psutil.Process()
        browsers = [p for p in browser_processes(me) if "chrom" in p.name() and "chrom" not in p.parent().name()]
        assert browsers  # one Chromium serves both in-process envs
        for p in browsers:
            p.kill()
        assert_all_gone(browsers)
        out = pool.step([search, search])  # both pages are gone: both copies are replaced
        assert out.dropped.tolist() == [True, True] and pool.restarts == 2
        out = pool.step([search, search])
        assert not out.dropped.any() and [i["page"] for i in out.infos] == ["results", "results"]
