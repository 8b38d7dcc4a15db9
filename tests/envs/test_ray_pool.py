"""EnvPool(mode="ray"): every copy in a Ray actor behaves like a subprocess copy — same episodes, the
same self-healing (a killed actor is replaced, its episode dropped and counted), exact resume.

One local Ray instance (2 logical CPUs) serves the whole module: starting one takes seconds. Without
Ray the pool tests skip, unless ``VLDAC_REQUIRE_RAY=1`` (scripts/test.sh, what CI runs) makes that a
failure. The config tests at the end need no Ray.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from tests.envs import faulty
from tests.envs import test_pool as pool_tests
from tests.envs import test_pool_healing as healing_tests
from vldac_lightning.envs import ray_worker
from vldac_lightning.envs.pool import EnvPool, EnvPoolError, episode_seed, train_seeds
from vldac_lightning.envs.ray_worker import RAY_MISSING, RayOptions, RayWorker, init_ray
from vldac_lightning.utils.config import ConfigError, validate_config

LOCAL_CPUS = 2


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Any]:
    """A local Ray started the way a ray pool starts it (init_ray), shut down after the module."""
    try:
        import ray
    except ImportError as error:
        if os.environ.get("VLDAC_REQUIRE_RAY", "").strip().lower() in ("1", "true", "yes"):
            pytest.fail(f"{RAY_MISSING} ({error})")
        pytest.skip(f"Ray is not installed (set VLDAC_REQUIRE_RAY=1 to fail instead): {RAY_MISSING}")
    saved = os.environ.pop("RAY_ADDRESS", None)  # a local instance, whatever the shell points at
    try:
        assert not ray.is_initialized()
        init_ray(RayOptions(num_cpus=LOCAL_CPUS))
        assert ray.cluster_resources()["CPU"] == LOCAL_CPUS
        yield ray
    finally:
        ray.shutdown()
        if saved is not None:
            os.environ["RAY_ADDRESS"] = saved


def wait_for_free_cpus(ray: Any, timeout: float = 60.0) -> None:
    """Actor resources come back asynchronously after ray.kill; wait (bounded) until all are free."""
    end = time.monotonic() + timeout
    while ray.available_resources().get("CPU", 0.0) < LOCAL_CPUS:
        assert time.monotonic() < end, f"actors still hold CPUs: {ray.available_resources()}"
        time.sleep(0.1)


def ray_pool(env_fns: list[Callable[[], Any]], **kwargs: Any) -> EnvPool:
    return EnvPool(env_fns, mode="ray", ray_options={"num_cpus_per_env": 0.25}, **kwargs)


# --- same episodes as the other modes ----------------------------------------------------------
def test_ray_pool_plays_exactly_the_sync_pools_episodes(ray_cluster: Any) -> None:
    assert pool_tests._scripted_run("ray") == pool_tests._scripted_run("sync")


def _autoreset_trace(mode: str) -> tuple[list[tuple], list[tuple]]:
    """NumberLine with a 2-step limit: every copy ends episodes (SAME_STEP autoreset) within 6 steps."""
    fns = pool_tests.env_fns(3, max_episode_steps=2)
    steps, episodes = [], []
    with EnvPool(fns, mode=mode, seeds=train_seeds(4, 3), ray_options={"num_cpus_per_env": 0.25}) as pool:
        obs = pool.reset()
        steps.append(tuple(o["text"] + o["images"].tobytes().hex()[:64] for o in obs))
        for t in range(6):
            out = pool.step(pool_tests._mixed_texts(pool, t)[0])
            for i in np.flatnonzero(out.done):
                assert out.final_obs[i] is not None  # the finished episode's last observation
            steps.append((tuple(o["text"] for o in out.obs), tuple(out.final_obs[i] is None for i in range(3)),
                          out.rewards.tolist(), out.terminated.tolist(), out.truncated.tolist()))
            episodes += [(e.env_index, e.seed, e.episode_index, e.episode_return, e.length, e.parse_failures)
                         for e in out.episodes]
    return steps, episodes


def test_ray_pool_resets_finished_episodes_like_the_sync_pool(ray_cluster: Any) -> None:
    steps, episodes = _autoreset_trace("ray")
    assert (steps, episodes) == _autoreset_trace("sync")
    assert {e[0] for e in episodes} == {0, 1, 2} and max(e[2] for e in episodes) >= 1
    seeds = train_seeds(4, 3)
    assert all(seed == episode_seed(seeds[i], j) for i, seed, j, *_ in episodes)


def test_actors_report_pids_and_free_their_cpus_on_close(ray_cluster: Any) -> None:
    with ray_pool([faulty.make_faulty] * 4, seeds=[1, 2, 3, 4]) as pool:
        pool.reset()
        pids = pool.pids
        assert all(isinstance(p, int) for p in pids) and len(set(pids)) == 4 and os.getpid() not in pids
        assert pool.action_names == ("-", "+")  # looked up through the env's wrappers, as async does
        assert ray_cluster.available_resources().get("CPU", 0.0) <= LOCAL_CPUS - 4 * 0.25
    wait_for_free_cpus(ray_cluster)


# --- self-healing ------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["ray.kill", "sigkill", "segfault", "exception"])
def test_a_dead_actor_is_replaced_and_its_episode_dropped(ray_cluster: Any, how: str) -> None:
    with ray_pool([faulty.make_faulty] * 3, seeds=train_seeds(3, 3), name="faulty") as pool:
        pool.reset()
        for _ in range(2):  # with these seeds no copy reaches its target: all are mid-episode
            pool.step(["-", "-", "-"])
        before = pool.pids
        texts = ["-", "-", "-"]
        if how == "ray.kill":
            worker = pool._workers[1]
            assert isinstance(worker, RayWorker)
            ray_cluster.kill(worker.actor)
        elif how == "sigkill":
            os.kill(before[1], signal.SIGKILL)  # a local actor: its process is on this machine
        else:
            texts[1] = faulty.SEGFAULT if how == "segfault" else faulty.RAISE
        out = pool.step(texts)
        assert out.dropped.tolist() == [False, True, False]
        assert pool.restarts == 1 and pool.dropped_episodes == 1
        assert out.rewards[1] == 0 and not out.done[1] and all(ep.env_index != 1 for ep in out.episodes)
        after = pool.pids
        assert after[1] != before[1] and after[0] == before[0] and after[2] == before[2]
        state = pool.state_dict()
        assert state["episode_index"][1] == 1 and state["actions"][1] == [] and state["actions"][0] == ["-"] * 3
        for _ in range(3):
            assert not pool.step(["+", "+", "+"]).dropped.any()
    wait_for_free_cpus(ray_cluster)  # the dead actor's replacement was closed too


def test_a_hung_actor_times_out_and_is_replaced(ray_cluster: Any) -> None:
    with ray_pool([faulty.make_faulty] * 2, seeds=[1, 2], step_timeout_s=2.0) as pool:
        pool.reset()
        before = pool.pids
        out = pool.step([faulty.HANG, "+"])
        assert out.dropped.tolist() == [True, False] and pool.restarts == 1
        assert pool.pids[0] != before[0]
        assert pool.step(["+", "+"]).rewards.shape == (2,)
    wait_for_free_cpus(ray_cluster)  # the hung actor was killed, not left sleeping on a CPU


def test_repeated_failures_stop_with_the_env_name_and_last_error(ray_cluster: Any) -> None:
    with ray_pool([faulty.make_broken], seeds=[5], name="gym_cards/Broken-v0", max_restarts=1) as pool:
        pool.reset()
        with pytest.raises(EnvPoolError, match=r"gym_cards/Broken-v0.*2 times in a row.*licence server is down"):
            for _ in range(3):
                pool.step(["+"])
        assert pool.restarts == 2
    wait_for_free_cpus(ray_cluster)


# --- resume and task groups --------------------------------------------------------------------------
def test_state_dict_restores_the_exact_episodes(ray_cluster: Any) -> None:
    healing_tests.test_state_dict_restores_the_exact_episodes("ray")


def test_a_group_starts_from_one_observation(ray_cluster: Any) -> None:
    seeds = [s for s in train_seeds(0, 2) for _ in range(2)]  # [0, 0, 1, 1]
    with ray_pool([faulty.make_faulty] * 4, seeds=seeds, group_size=2) as pool:
        obs = pool.reset()
    texts = [o["text"] + o["images"].tobytes().hex() for o in obs]
    assert texts[0] == texts[1] and texts[2] == texts[3] and texts[0] != texts[2]


# --- end to end -------------------------------------------------------------------------------------
@pytest.mark.slow
def test_smoke_training_on_ray_workers(ray_cluster: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.conftest import compose_config, reset_hydra
    from vldac_lightning.train import train

    created = []
    real_init = RayWorker.__init__

    def counting_init(self: RayWorker, *args: Any, **kwargs: Any) -> None:
        real_init(self, *args, **kwargs)
        created.append(self)

    monkeypatch.setattr(RayWorker, "__init__", counting_init)
    overrides = ["debug=smoke", "env.pool_mode=ray", "env.max_episode_steps=3", "logger=none"]
    cfg = compose_config(overrides, log_dir=tmp_path / "logs", output_dir=tmp_path / "out")
    try:
        metrics, objects = train(cfg)
    finally:
        reset_hydra()
    assert len(created) == 4  # debug=smoke: 2 training + 2 evaluation envs, each an actor
    assert objects["trainer"].global_step == 4 and 0.0 <= metrics["eval/success_rate"] <= 1.0
    assert objects["datamodule"].last_rollout_stats.episodes
    wait_for_free_cpus(ray_cluster)  # teardown closed both pools


# --- without Ray, and config checks (no Ray instance needed) -------------------------------------------
def test_without_ray_the_pool_names_the_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(ImportError, match=r"env.pool_mode=ray needs Ray: pip install 'vldac_lightning\[ray\]'"):
        EnvPool([faulty.make_faulty], mode="ray", seeds=[1])


@pytest.fixture
def ray_spec(monkeypatch: pytest.MonkeyPatch) -> Callable[[bool], None]:
    """``ray_spec(installed)``: make ``importlib.util.find_spec("ray")`` say Ray is (not) installed."""
    real = importlib.util.find_spec

    def set_installed(installed: bool) -> None:
        fake = real("json") if installed else None  # any spec object stands for "installed"
        monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: fake if name == "ray" else real(name, *a))

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return set_installed


def test_pool_mode_ray_without_ray_is_a_config_error(compose_train_cfg: Any, ray_spec: Any) -> None:
    ray_spec(False)
    with pytest.raises(ConfigError, match=r"^env.pool_mode=ray needs Ray: pip install 'vldac_lightning\[ray\]'$"):
        validate_config(compose_train_cfg(["env.pool_mode=ray"]))


def test_a_local_ray_too_small_for_the_actors_is_a_config_error(compose_train_cfg: Any, ray_spec: Any,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    ray_spec(True)
    monkeypatch.setattr(ray_worker, "address_problem", lambda address: None)  # ray://head:10001 answers
    # model=tiny (the default): 16 + 16 env actors x 0.0625 CPUs fit 2 logical CPUs.
    validate_config(compose_train_cfg(["env.pool_mode=ray", "env.ray.num_cpus=2"]))
    small = ["env.pool_mode=ray", "env.ray.num_cpus=1"]
    with pytest.raises(ConfigError, match=r"32 env actors.*need 2 CPUs.*has 1.*num_cpus_per_env=0.03125 or less"):
        validate_config(compose_train_cfg(small))
    validate_config(compose_train_cfg([*small, "env.ray.num_cpus_per_env=0.03125"]))
    validate_config(compose_train_cfg([*small, "env.ray.address=ray://head:10001"]))  # a cluster can grow
    with pytest.raises(ConfigError, match="env.ray.num_cpus_per_env=-1 must be >= 0"):
        validate_config(compose_train_cfg(["env.pool_mode=ray", "env.ray.num_cpus_per_env=-1"]))
    with pytest.raises(ConfigError, match="env.pool_mode='threads' is not one of"):
        validate_config(compose_train_cfg(["env.pool_mode=threads"]))


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_cluster_address_fails_in_seconds(compose_train_cfg: Any, ray_spec: Any,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """ray.init would retry the GCS for minutes; train and doctor both probe the address first."""
    from vldac_lightning.doctor import checks as doctor

    ray_spec(True)
    address = f"127.0.0.1:{_closed_port()}"
    started = time.monotonic()
    with pytest.raises(ConfigError, match=rf"env.ray.address='{address}' is not reachable: nothing answers at "
                                          rf"{address} .*ray start --head.*env.ray.address=null"):
        validate_config(compose_train_cfg(["env.pool_mode=ray", f"env.ray.address={address}"]))
    monkeypatch.setenv("RAY_ADDRESS", f"ray://{address}")  # the address the run would use, from the environment
    with pytest.raises(ConfigError, match=r"\$RAY_ADDRESS='ray://127.0.0.1:\d+' is not reachable"):
        validate_config(compose_train_cfg(["env.pool_mode=ray"]))
    check = doctor.check_ray(compose_train_cfg(["env.pool_mode=ray"]))
    assert check.status == "fail" and address in check.detail and "ray start --head" in check.fix
    assert time.monotonic() - started < 20
    assert ray_worker._endpoint("ray://head") == ("head", 10001) and ray_worker._endpoint("auto") is None


def test_a_local_ray_starts_with_token_auth_and_old_rays_are_refused(compose_train_cfg: Any, ray_spec: Any,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray's ports listen on every interface: token auth (Ray >= 2.52) is what stops a stranger."""
    import importlib.metadata

    started: list[dict[str, Any]] = []

    class FakeRay:
        @staticmethod
        def is_initialized() -> bool:
            return False

        @staticmethod
        def init(**kwargs: Any) -> None:
            started.append({**kwargs, "auth": os.environ.get("RAY_AUTH_MODE")})

    monkeypatch.setattr(ray_worker, "import_ray", lambda: FakeRay)
    monkeypatch.setitem(sys.modules, "ray", FakeRay)  # type: ignore[arg-type]
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    init_ray(RayOptions())
    assert started[-1]["address"] == "local" and started[-1]["auth"] == "token"
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # the user's explicit choice is kept (with a warning)
    init_ray(RayOptions())
    assert started[-1]["auth"] == "disabled"

    ray_spec(True)
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "2.51.0" if name == "ray" else "1.0")
    with pytest.raises(ConfigError, match=r"Ray 2.51.0 has no token authentication \(Ray >= 2.52\).*ray>=2.52,<3"):
        validate_config(compose_train_cfg(["env.pool_mode=ray"]))
