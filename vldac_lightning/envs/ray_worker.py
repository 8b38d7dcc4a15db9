"""``pool_mode=ray``: each env copy in a Ray actor, on this machine or across a Ray cluster.

The actor holds one env built from the pool's picklable thunk and answers reset/step calls; the
:class:`RayWorker` in the trainer's process speaks the pool's worker protocol
(:class:`~vldac_lightning.envs.workers.EnvWorker`) by submitting actor calls and waiting on their
object refs. A dead actor (killed, segfault, lost node) surfaces as ``RayActorError`` and an env
exception as ``RayTaskError``: the pool replaces the worker and drops the episode exactly as for a
dead subprocess. See docs/environments.md#pool-modes.

Ray is an optional extra (``pip install 'vldac_lightning[ray]'``) and is imported only here, only
when a ray pool is created. ``ray.init`` runs once per process, lazily: it connects to
``env.ray.address`` (or ``$RAY_ADDRESS``) when one is set, else starts a local Ray instance.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import gymnasium as gym

from .workers import call_env

__all__ = ["MIN_RAY_VERSION", "RAY_MISSING", "RayOptions", "RayWorker", "address_problem", "import_ray", "init_ray",
           "require_token_auth"]

log = logging.getLogger(__name__)

RAY_MISSING = "env.pool_mode=ray needs Ray: pip install 'vldac_lightning[ray]'"
_CLOSE_TIMEOUT_S = 5.0  # a healthy actor closes its env in milliseconds; a stuck one is killed after this
_PID_TIMEOUT_S = 60.0  # an actor that has not started within this reports pid None
# Actor results up to this size travel inline with the reply instead of through Ray's shared-memory
# object store (default cut-off 100 KiB): one observation is a few 100 KB of frames, and inline
# replies made a local 8-env NumberLine pool ≈ 1.8x faster (docs/environments.md#pool-modes).
INLINE_RESULT_BYTES = 4 * 2**20


@dataclass(frozen=True)
class RayOptions:
    """The ``env.ray`` config keys (conf/train.yaml documents them)."""

    # Ray cluster to connect to ("auto": the one `ray start` runs on this machine; "ray://host:10001":
    # Ray Client). None: $RAY_ADDRESS if set, else a new local Ray instance in this process.
    address: str | None = None
    # Logical CPUs each env actor reserves: Ray places at most cores / num_cpus_per_env actors per node.
    # 1/16: model=tiny's 16 + 16 envs fit a 2-core machine; raise it for CPU-heavy simulators.
    num_cpus_per_env: float = 0.0625
    # Local Ray only: logical CPUs it schedules on (None: this machine's cores).
    num_cpus: int | None = None

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any] | None) -> RayOptions:
        return cls(**dict(options or {}))

    def cluster_address(self) -> str | None:
        """Where the envs run: the configured address, else ``$RAY_ADDRESS``, else None (local)."""
        return self.address or os.environ.get("RAY_ADDRESS") or None


_PROBE_TIMEOUT_S = 3.0  # a cluster address that does not answer within this is reported, not retried for minutes


def _endpoint(address: str) -> tuple[str, int] | None:
    """``(host, port)`` a Ray address connects to first; None for ``auto``/``local`` (Ray finds those itself,
    and fails fast when there is none)."""
    if address in ("auto", "local"):
        return None
    client = address.startswith("ray://")
    rest = address.removeprefix("ray://").split("/", 1)[0]
    host, sep, port = rest.rpartition(":")
    if not sep:
        host, port = rest, "10001" if client else "6379"  # Ray Client's and the GCS's default ports
    return host.strip("[]"), int(port) if port.isdigit() else -1


def address_problem(address: str, timeout: float = _PROBE_TIMEOUT_S) -> str | None:
    """Why nothing answers at a Ray cluster address (one TCP connect, ``timeout`` seconds), or None.

    ``ray.init`` retries an unreachable GCS for minutes before it gives up; this answers in seconds."""
    import socket

    endpoint = _endpoint(address)
    if endpoint is None:
        return None
    host, port = endpoint
    if not 0 < port < 65536:
        return f"{address!r} has no valid port (expected host:port or ray://host:port)"
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        reason = "no answer" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        return f"nothing answers at {host}:{port} ({reason}, {timeout:g} s timeout)"
    return None


def import_ray() -> Any:
    """The ``ray`` module, or an ImportError naming the extra to install."""
    try:
        import ray
    except ImportError as error:
        raise ImportError(RAY_MISSING) from error
    return ray


MIN_RAY_VERSION = (2, 52)  # the first Ray with token authentication (RAY_AUTH_MODE=token)
AUTH_MODE_VAR = "RAY_AUTH_MODE"


def require_token_auth() -> None:
    """Before a local Ray starts: switch on Ray's token authentication unless the user chose a mode.

    Ray's GCS, raylet and workers listen on every interface (no Ray setting binds them to loopback);
    with token auth (Ray >= 2.52, off by default in some versions) a process without the token that
    ``ray.init`` writes to ``~/.ray/auth_token`` cannot submit work (docs/troubleshooting.md#ray-env-workers-envpool_moderay)."""
    mode = os.environ.get(AUTH_MODE_VAR)
    if mode is None:
        os.environ[AUTH_MODE_VAR] = "token"  # inherited by the Ray processes this process starts
        if "ray" in sys.modules:  # Ray read its config at import: refresh it, as Ray's own default-on path does
            try:
                from ray._raylet import Config

                Config.initialize("")
            except Exception as exc:  # noqa: BLE001 - a Ray without it: the GCS then refuses this driver, loudly
                log.warning("Could not refresh Ray's config after setting %s=token: %s", AUTH_MODE_VAR, exc)
    elif mode.lower() != "token":
        log.warning("%s=%s: the local Ray for the env workers accepts work from anyone who can reach this machine's "
                    "Ray ports (they listen on every interface); unset it to use token authentication",
                    AUTH_MODE_VAR, mode)


def init_ray(options: RayOptions) -> Any:
    """Start or join Ray once per process (a Ray the caller already started is used as it is)."""
    address = options.cluster_address()
    loaded = sys.modules.get("ray")
    if address is None and not (loaded is not None and loaded.is_initialized()):
        require_token_auth()  # before Ray is imported where possible: it reads the mode then
    ray = import_ray()
    if ray.is_initialized():
        return ray
    # The dashboard is a web server we never use; worker output (env warnings, tracebacks) is
    # forwarded to this process's log so a failing env is visible where the run is watched.
    common = {"include_dashboard": False, "ignore_reinit_error": True, "log_to_driver": True}
    if address:
        log.info("Connecting to the Ray cluster at %s for the env workers", address)
        ray.init(address=address, **common)
    else:
        # address="local": a fresh instance even if `ray start` runs here (that one needs address=auto).
        log.info("Starting a local Ray instance for the env workers (num_cpus=%s)", options.num_cpus)
        ray.init(address="local", num_cpus=options.num_cpus,
                 _system_config={"max_direct_call_object_size": INLINE_RESULT_BYTES}, **common)
    return ray


class _EnvActor:
    """Lives in a Ray worker process: one env, driven by :class:`RayWorker`."""

    def __init__(self, env_fn: Callable[[], gym.Env]) -> None:
        self.env = env_fn()

    def pid(self) -> int:
        return os.getpid()

    def reset(self, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
        obs, info = self.env.reset(seed=int(seed))
        return obs, dict(info)

    def step(self, text: str) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(text)
        return obs, float(reward), bool(terminated), bool(truncated), dict(info)

    def call(self, name: str) -> Any:
        return call_env(self.env, name)

    def close(self) -> None:
        self.env.close()


@lru_cache(maxsize=1)
def _actor_class() -> Any:
    # max_restarts=0: Ray must not revive a dead actor behind the pool's back; the pool replaces it
    # on a new episode and counts the restart (a revived actor would lose the episode silently).
    return import_ray().remote(max_restarts=0, max_task_retries=0)(_EnvActor)


class RayWorker:
    """One env copy in a Ray actor. ``pid`` is the actor's process id on its node (None if it never started)."""

    def __init__(self, env_fn: Callable[[], gym.Env], options: Mapping[str, Any] | RayOptions | None = None) -> None:
        opts = options if isinstance(options, RayOptions) else RayOptions.from_mapping(options)
        self._ray = init_ray(opts)
        self.actor = _actor_class().options(num_cpus=opts.num_cpus_per_env).remote(env_fn)
        # Actor calls from one caller run in order, so this answers once the env is built.
        self._pid_ref = self.actor.pid.remote()
        self._pid: int | None = None
        self._pending: Any = None

    @property
    def pid(self) -> int | None:
        if self._pid is None and self._pid_ref is not None:
            try:
                self._pid = int(self._ray.get(self._pid_ref, timeout=_PID_TIMEOUT_S))
            except Exception:  # noqa: BLE001 - a dead or never-started actor has no pid
                self._pid_ref = None
        return self._pid

    def _wait(self, timeout: float | None) -> Any:
        # GetTimeoutError is a TimeoutError; RayActorError (dead actor) and RayTaskError (the env
        # raised) propagate: the pool treats every one as a failed worker.
        ref, self._pending = self._pending, None
        return self._ray.get(ref, timeout=timeout)

    def send_reset(self, seed: int) -> None:
        self._pending = self.actor.reset.remote(int(seed))

    def recv_reset(self, timeout: float | None) -> tuple[dict[str, Any], dict[str, Any]]:
        return self._wait(timeout)

    def send_step(self, text: str) -> None:
        self._pending = self.actor.step.remote(str(text))

    def recv_step(self, timeout: float | None) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        return self._wait(timeout)

    def call(self, name: str) -> Any:
        return self._ray.get(self.actor.call.remote(name))

    def kill(self) -> None:
        try:
            self._ray.kill(self.actor, no_restart=True)
        except Exception:  # noqa: BLE001 - already dead, or its node is gone
            pass

    def close(self) -> None:
        try:
            self._ray.get(self.actor.close.remote(), timeout=_CLOSE_TIMEOUT_S)
        except Exception:  # noqa: BLE001 - closing a broken env must not mask the original error
            pass
        self.kill()  # frees the actor's CPU reservation now, not when the handle is collected
