"""Env workers: where one copy of an :class:`~vldac_lightning.envs.pool.EnvPool` lives.

A worker holds one language env and speaks a split request/answer protocol (:class:`EnvWorker`),
so the pool can send a step to every copy before waiting for any answer. Three kinds ship
(docs/environments.md#pool-modes):

- ``sync``  (:class:`InProcessWorker`): the env in this process; exceptions count as crashes,
  hangs cannot be timed out. For tests and debugging.
- ``async`` (:class:`ProcessWorker`): the env in its own subprocess (a one-env gymnasium
  ``AsyncVectorEnv``), so a segfault or hang takes down one copy, never the pool.
- ``ray``   (:class:`~vldac_lightning.envs.ray_worker.RayWorker`): the env in a Ray actor, on this
  machine or anywhere on a Ray cluster.

:func:`make_worker` is the one place a mode name becomes a worker; :func:`register_worker` adds a
kind. The pool treats every exception a worker raises (a dead process or actor, an env exception,
a timeout) the same way: it kills the worker, starts a fresh one and drops the copy's episode.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np
from gymnasium.vector import AsyncVectorEnv, AutoresetMode

__all__ = [
    "WORKER_MODES",
    "EnvWorker",
    "InProcessWorker",
    "ProcessWorker",
    "WorkerOptions",
    "call_env",
    "is_timeout",
    "make_worker",
    "register_worker",
    "worker_modes",
]

Obs = dict[str, Any]  # {"images": uint8 [n, H, W, 3], "num_images": int, "text": str}
Info = dict[str, Any]
StepResult = tuple[Obs, float, bool, bool, Info]  # obs, reward, terminated, truncated, info


@runtime_checkable
class EnvWorker(Protocol):
    """One env copy behind a request/answer protocol.

    ``send_*`` starts an operation and returns at once (in-process workers may run it right away);
    ``recv_*`` returns its result, waiting at most ``timeout`` seconds (None: forever). Any failure
    (the env raised, the process or actor died, no answer in time) is raised from ``send_*`` or
    ``recv_*``; :func:`is_timeout` tells a timeout apart for the log. After a failure the pool
    calls :meth:`kill` and never uses the worker again.
    """

    pid: int | None  # the process holding the env, when there is one (for logs and tests)

    def send_reset(self, seed: int) -> None: ...

    def recv_reset(self, timeout: float | None) -> tuple[Obs, Info]: ...

    def send_step(self, text: str) -> None: ...

    def recv_step(self, timeout: float | None) -> StepResult: ...

    def call(self, name: str) -> Any:
        """The env's attribute ``name``, called if it is a method (blocking)."""
        ...

    def kill(self) -> None:
        """Discard a failed worker at once, without waiting for the env."""
        ...

    def close(self) -> None:
        """Close the env and release the worker (must not raise)."""
        ...


def is_timeout(error: BaseException) -> bool:
    """Whether a worker failed by not answering in time (gymnasium and Ray raise different types)."""
    return isinstance(error, (TimeoutError, multiprocessing.TimeoutError))


@dataclass(frozen=True)
class WorkerOptions:
    """Settings for the worker kinds that need them (the others ignore them)."""

    context: str = "spawn"  # async: the multiprocessing start method (fork is unsafe once torch runs)
    # ray: RayOptions fields (address, num_cpus_per_env, num_cpus), see envs/ray_worker.py
    ray: Mapping[str, Any] = field(default_factory=dict)


def call_env(env: gym.Env, name: str) -> Any:
    """``env``'s attribute ``name`` (looked up through its wrappers, as gymnasium's vector envs
    do), called if it is a method."""
    attr = env.get_wrapper_attr(name) if isinstance(env, gym.Env) else getattr(env, name)
    return attr() if callable(attr) else attr


# ------------------------------------------------------------------------------- in process
class InProcessWorker:
    """One copy in this process. Exceptions are caught like a crash; hangs cannot be timed out."""

    def __init__(self, env_fn: Callable[[], gym.Env]) -> None:
        self.env = env_fn()
        self._result: Any = None
        self._error: BaseException | None = None
        self.pid: int | None = None

    def _run(self, fn: Callable[[], Any]) -> None:
        self._result, self._error = None, None
        try:
            self._result = fn()
        except Exception as error:  # noqa: BLE001 - any env failure is a worker failure
            self._error = error

    def _take(self) -> Any:
        if self._error is not None:
            raise self._error
        return self._result

    def send_reset(self, seed: int) -> None:
        self._run(lambda: self.env.reset(seed=int(seed)))

    def recv_reset(self, timeout: float | None) -> tuple[Obs, Info]:
        obs, info = self._take()
        return obs, dict(info)

    def send_step(self, text: str) -> None:
        self._run(lambda: self.env.step(text))

    def recv_step(self, timeout: float | None) -> StepResult:
        obs, reward, terminated, truncated, info = self._take()
        return obs, float(reward), bool(terminated), bool(truncated), dict(info)

    def call(self, name: str) -> Any:
        return call_env(self.env, name)

    def kill(self) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.env.close()
        except Exception:  # noqa: BLE001 - closing a broken env must not mask the original error
            pass


# ------------------------------------------------------------------------------- subprocess
def _unbatch_info(infos: Mapping[str, Any], i: int) -> Info:
    """Env ``i``'s entries of a vector-env info dict (drops the ``_key`` masks)."""
    out: Info = {}
    for key, value in infos.items():
        if key.startswith("_") or key in ("final_obs", "final_info"):
            continue
        mask = infos.get(f"_{key}")
        if mask is not None and not mask[i]:
            continue
        if isinstance(value, Mapping):
            out[key] = _unbatch_info(value, i)
        else:
            item = value[i]
            out[key] = item.item() if isinstance(item, np.generic) else item
    return out


def _unbatch_obs(obs: Mapping[str, Any]) -> Obs:
    return {"images": obs["images"][0], "num_images": int(obs["num_images"][0]), "text": str(obs["text"][0])}


class ProcessWorker:
    """One copy in its own subprocess: a one-env ``AsyncVectorEnv`` with autoreset disabled."""

    def __init__(self, env_fn: Callable[[], gym.Env], context: str = "spawn") -> None:
        self.vec = AsyncVectorEnv([env_fn], shared_memory=False, context=context,
                                  autoreset_mode=AutoresetMode.DISABLED)
        self.pid: int | None = self.vec.processes[0].pid

    def send_reset(self, seed: int) -> None:
        self.vec.reset_async(seed=[int(seed)])

    def recv_reset(self, timeout: float | None) -> tuple[Obs, Info]:
        obs, info = self.vec.reset_wait(timeout=timeout)
        return _unbatch_obs(obs), _unbatch_info(info, 0)

    def send_step(self, text: str) -> None:
        self.vec.step_async((str(text),))

    def recv_step(self, timeout: float | None) -> StepResult:
        obs, rewards, terminated, truncated, info = self.vec.step_wait(timeout=timeout)
        return _unbatch_obs(obs), float(rewards[0]), bool(terminated[0]), bool(truncated[0]), _unbatch_info(info, 0)

    def call(self, name: str) -> Any:
        return self.vec.call(name)[0]

    def kill(self) -> None:
        """Discard a failed worker: SIGKILL (a worker stuck in C code can ignore SIGTERM), reap it,
        and mark the vector env closed so its ``__del__`` does not talk to a dead pipe."""
        vec = self.vec
        for process in vec.processes:
            if process.is_alive():
                try:
                    process.kill()
                except ProcessLookupError:
                    pass
            process.join(5)
        for pipe in vec.parent_pipes:
            if pipe is not None:
                pipe.close()
        vec.closed = True

    def close(self) -> None:
        try:
            self.vec.close(timeout=10)
        except Exception:  # noqa: BLE001
            self.kill()


# ------------------------------------------------------------------------------- registry
WorkerFactory = Callable[[Callable[[], gym.Env], WorkerOptions], EnvWorker]


def _ray_worker(env_fn: Callable[[], gym.Env], options: WorkerOptions) -> EnvWorker:
    from .ray_worker import RayWorker  # lazy: Ray is an optional extra, imported only when used

    return RayWorker(env_fn, options.ray)


_FACTORIES: dict[str, WorkerFactory] = {
    "async": lambda env_fn, options: ProcessWorker(env_fn, options.context),
    "sync": lambda env_fn, options: InProcessWorker(env_fn),
    "ray": _ray_worker,
}
WORKER_MODES: tuple[str, ...] = ("async", "sync", "ray")  # the built-in kinds (env.pool_mode's values)


def register_worker(mode: str, factory: WorkerFactory) -> None:
    """Make ``EnvPool(mode=mode)`` build its workers with ``factory(env_fn, options)``."""
    _FACTORIES[mode] = factory


def worker_modes() -> list[str]:
    """Every mode :func:`make_worker` accepts (the built-in ones and any registered)."""
    return list(_FACTORIES)


def make_worker(mode: str, env_fn: Callable[[], gym.Env], options: WorkerOptions | None = None) -> EnvWorker:
    """A new worker of kind ``mode`` holding one env built by ``env_fn`` (picklable for async/ray)."""
    try:
        factory = _FACTORIES[mode]
    except KeyError:
        raise ValueError(f"mode={mode!r} is not valid; choose one of {worker_modes()}") from None
    return factory(env_fn, options or WorkerOptions())
