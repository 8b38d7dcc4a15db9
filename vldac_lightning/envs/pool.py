"""``EnvPool``: N copies of a language env, stepped together, self-healing, resumable.

Each copy lives in a *worker* (envs/workers.py, docs/environments.md#pool-modes): its own
subprocess (``mode="async"``, a one-env gymnasium ``AsyncVectorEnv``, so a crash or hang takes down
one copy, never the pool), a Ray actor (``mode="ray"``, on this machine or a cluster) or the main
process (``mode="sync"``). The pool resets finished episodes itself, each with an explicit seed
derived from (copy seed, episode index) — gymnasium's SAME_STEP semantics, but every episode is
reproducible from two integers. Together with the log of the texts sent since the episode began,
that makes the pool's state a few integers and strings: :meth:`state_dict` /
:meth:`load_state_dict` restore it exactly by replay, which is what exact resume needs.

A worker that dies (killed, segfault, exception, a lost Ray actor) or does not answer within
``step_timeout_s`` is replaced by a fresh one on a new episode. Its unfinished episode is dropped
(``PoolStep.dropped``; the rollout masks it out of the loss) and counted (``restarts``,
``dropped_episodes``). A copy that fails ``max_restarts`` times in a row stops the run with
:class:`EnvPoolError` naming the env and the last error.

Task groups (``group_size=K``): copies ``g·K … g·K+K−1`` share one seed, so each of their episodes
starts from the same task (identical first observation); groups have distinct seeds. Since every
later episode's seed is derived from (copy seed, episode index), the K copies stay on the same task
as long as they begin their episodes together — ``step(..., active=...)`` lets copies that finished
wait for the rest of their group (rollout/episodes.py). A copy replaced after a crash starts its
next episode, the one its group starts next.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from ..utils.interrupt import raise_if_stop_requested
from ..utils.progress import Progress
from .frames import FrameHistory
from .pool_data import EpisodeStats, PoolStep, episode_seed, eval_seeds, success_by_task_type, train_seeds
from .workers import EnvWorker, WorkerOptions, is_timeout, make_worker, worker_modes

__all__ = [
    "EnvPool",
    "EnvPoolError",
    "EpisodeStats",
    "PoolStep",
    "episode_seed",
    "eval_seeds",
    "success_by_task_type",
    "train_seeds",
]

log = logging.getLogger(__name__)


class EnvPoolError(RuntimeError):
    """A copy kept failing after restarts (or the pool was misused)."""


# ----------------------------------------------------------------------------------- the pool
class EnvPool:
    """N env copies in subprocesses (``mode="async"``), Ray actors (``mode="ray"``, settings in
    ``ray_options``: see envs/ray_worker.py ``RayOptions``) or in-process (``mode="sync"``).

    Autoreset semantics are gymnasium's SAME_STEP, implemented here: on the step that ends an
    episode the returned observation is already the next episode's first one, and the finished
    episode's last observation is in ``PoolStep.final_obs`` (its info in ``PoolStep.infos``) so the
    rollout can bootstrap truncated episodes. Async workers use ``spawn`` by default (fork is
    unsafe once torch/OpenGL threads exist) and no shared memory (text observations).
    """

    def __init__(
        self,
        env_fns: Sequence[Callable[[], gym.Env]],
        *,
        mode: str = "async",
        seeds: Sequence[int],
        context: str = "spawn",
        name: str = "env",
        step_timeout_s: float | None = 60.0,
        reset_timeout_s: float | None = 300.0,
        max_restarts: int = 3,
        group_size: int = 1,
        ray_options: Mapping[str, Any] | None = None,
    ) -> None:
        if not env_fns:
            raise ValueError("EnvPool needs at least one env_fn")
        if mode not in worker_modes():
            raise ValueError(f"mode={mode!r} is not valid; choose one of {worker_modes()}")
        if max_restarts < 0:
            raise ValueError(f"max_restarts must be >= 0, got {max_restarts}")
        if group_size < 1 or len(env_fns) % group_size:
            raise ValueError(f"group_size={group_size} must be >= 1 and divide the number of envs ({len(env_fns)})")
        self.group_size = int(group_size)
        self.seeds = self._check_seeds(seeds, len(env_fns))
        self.mode = mode
        self.name = name
        self.context = context
        self._worker_options = WorkerOptions(context=context, ray=dict(ray_options or {}))
        self.step_timeout_s = step_timeout_s
        self.reset_timeout_s = reset_timeout_s
        self.max_restarts = int(max_restarts)
        self.num_envs = len(env_fns)
        self._env_fns = list(env_fns)
        self._closed = False
        self._action_names: tuple[str, ...] | None = None
        self._workers: list[EnvWorker] = []
        try:
            for fn in self._env_fns:
                self._workers.append(self._spawn(fn))
        except Exception:
            self.close()
            raise
        self.restarts = 0  # workers replaced over the pool's life
        self.dropped_episodes = 0  # unfinished episodes lost with them
        self._failures_in_row = [0] * self.num_envs
        self._copy_seeds = list(self.seeds)
        self._episode_index = [0] * self.num_envs
        self._actions: list[list[str]] = [[] for _ in range(self.num_envs)]
        self._started = False
        # Observations share their history frames across steps, so a rollout stores each frame once.
        self._frames = [FrameHistory() for _ in range(self.num_envs)]
        self._zero_counters()

    def _item(self, i: int, obs: Mapping[str, Any]) -> dict[str, Any]:
        """Copy ``i``'s observation with its frames stored once in that copy's FrameHistory."""
        images = obs["images"][: int(obs["num_images"])]
        return {"images": self._frames[i].push(images), "text": str(obs["text"])}

    def _spawn(self, fn: Callable[[], gym.Env]) -> EnvWorker:
        return make_worker(self.mode, fn, self._worker_options)

    def _check_seeds(self, seeds: Sequence[int], n: int) -> list[int]:
        seeds = [int(s) for s in seeds]
        if len(seeds) != n:
            raise ValueError(f"need one seed per env: got {len(seeds)} seeds for {n} envs")
        k = self.group_size
        groups = [seeds[i : i + k] for i in range(0, n, k)]
        if any(len(set(g)) != 1 for g in groups) or len({g[0] for g in groups}) != len(groups):
            what = "per env copy" if k == 1 else f"per task group, shared by its {k} copies"
            raise ValueError(f"seeds must be distinct {what}, got {seeds}")
        return seeds

    def _zero_counters(self) -> None:
        n = self.num_envs
        self._returns = np.zeros(n, np.float64)
        self._lengths = np.zeros(n, np.int64)
        self._parse_failures = np.zeros(n, np.int64)
        self._invalid = np.zeros(n, np.int64)

    def _zero_copy(self, i: int) -> None:
        self._returns[i] = 0.0
        self._lengths[i] = self._parse_failures[i] = self._invalid[i] = 0
        self._actions[i] = []

    def _account(self, i: int, reward: float, info: Mapping[str, Any]) -> None:
        self._returns[i] += float(reward)
        self._lengths[i] += 1
        self._parse_failures[i] += not info.get("parse_ok", True)
        self._invalid[i] += not info.get("action_valid", True)

    # --- API -------------------------------------------------------------------------------
    @property
    def action_names(self) -> tuple[str, ...]:
        if self._action_names is None:
            self._action_names = tuple(self._workers[0].call("action_names"))
        return self._action_names

    @property
    def pids(self) -> list[int | None]:
        """Worker process ids (None in sync mode; in ray mode each actor's pid on its node)."""
        return [w.pid for w in self._workers]

    def reset(self, seeds: Sequence[int] | None = None) -> list[dict[str, Any]]:
        """Reset every copy with ``seeds`` (default: the pool's seeds) and zero the statistics."""
        self._check_open()
        seeds = self.seeds if seeds is None else self._check_seeds(seeds, self.num_envs)
        self._copy_seeds = list(seeds)
        self._episode_index = [0] * self.num_envs
        self._zero_counters()
        self._actions = [[] for _ in range(self.num_envs)]
        self._started = True
        return [self._reset_copies(list(range(self.num_envs)))[i] for i in range(self.num_envs)]

    def step(self, texts: Sequence[str], active: Sequence[bool] | None = None) -> PoolStep:
        """Step every copy with its generated text (failed workers are replaced, see the module doc).

        ``active`` (default: all) leaves the copies marked False untouched: no step, reward 0, not
        done, and ``obs[i]`` None (their observation is the one they had); their text is ignored.
        """
        self._check_open()
        if not self._started:
            raise EnvPoolError("call reset() (or load_state_dict()) before step()")
        if len(texts) != self.num_envs:
            raise ValueError(f"need one text per env: got {len(texts)} for {self.num_envs} envs")
        texts = [str(t) for t in texts]
        idle = set() if active is None else {i for i, a in enumerate(active) if not a}
        errors: dict[int, BaseException] = {}
        for i, worker in enumerate(self._workers):
            if i in idle:
                continue
            try:
                worker.send_step(texts[i])
            except Exception as error:  # noqa: BLE001 - a dead pipe is a dead worker
                errors[i] = error
        results: list[Any] = [None] * self.num_envs
        deadline = None if self.step_timeout_s is None else time.monotonic() + self.step_timeout_s
        for i, worker in enumerate(self._workers):
            if i in errors or i in idle:
                continue
            try:
                results[i] = worker.recv_step(self._remaining(deadline))
            except Exception as error:  # noqa: BLE001 - crash, hang (TimeoutError) or env exception
                errors[i] = error

        n = self.num_envs
        obs: list[dict[str, Any] | None] = [None] * n
        rewards = np.zeros(n, np.float32)
        terminated = np.zeros(n, bool)
        truncated = np.zeros(n, bool)
        dropped = np.zeros(n, bool)
        step_infos: list[dict[str, Any]] = [{} for _ in range(n)]
        final_obs: list[dict[str, Any] | None] = [None] * n
        episodes: list[EpisodeStats] = []
        ended: list[int] = []
        for i in range(n):
            if i in errors or i in idle:
                continue
            o, reward, term, trunc, info = results[i]
            self._failures_in_row[i] = 0
            self._actions[i].append(texts[i])
            self._account(i, reward, info)
            rewards[i], terminated[i], truncated[i], step_infos[i] = reward, term, trunc, info
            item = self._item(i, o)
            if not (term or trunc):
                obs[i] = item
                continue
            final_obs[i] = item
            episodes.append(EpisodeStats(
                env_index=i, seed=episode_seed(self._copy_seeds[i], self._episode_index[i]),
                episode_index=self._episode_index[i], episode_return=float(self._returns[i]),
                length=int(self._lengths[i]), success=bool(info.get("success", self._returns[i] > 0)),
                parse_failures=int(self._parse_failures[i]), invalid_actions=int(self._invalid[i]),
                task_type=str(info["task_type"]) if info.get("task_type") else None,
            ))
            ended.append(i)
        for i, error in errors.items():
            dropped[i] = True
            self.dropped_episodes += 1
            self._restart(i, error)
            ended.append(i)
        # Next episodes of the copies that ended (or were replaced), reset together.
        for i in ended:
            self._episode_index[i] += 1
        for i, item in self._reset_copies(sorted(ended)).items():
            obs[i] = item
        return PoolStep(obs=obs, rewards=rewards, terminated=terminated, truncated=truncated,  # type: ignore[arg-type]
                        infos=step_infos, final_obs=final_obs, episodes=episodes, dropped=dropped)

    def call_oracle_texts(self) -> list[str | None]:
        """Each copy's oracle answer for its current state (None where there is none)."""
        return [w.call("oracle_text") for w in self._workers]

    # --- resume ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Integers and strings that :meth:`load_state_dict` turns back into this exact state."""
        return {
            "num_envs": self.num_envs,
            "copy_seeds": list(self._copy_seeds),
            "episode_index": list(self._episode_index),
            "actions": [list(a) for a in self._actions],
            "restarts": self.restarts,
            "dropped_episodes": self.dropped_episodes,
            "started": self._started,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> list[dict[str, Any]] | None:
        """Restore a :meth:`state_dict`: reset each copy to its episode's seed and replay the texts
        it received since (envs are deterministic given the seed). Returns the current observations
        (None if the saved pool had never been reset)."""
        self._check_open()
        if int(state["num_envs"]) != self.num_envs:
            raise EnvPoolError(f"saved pool has {state['num_envs']} envs, this one {self.num_envs}; "
                               "resume with the same env.num_envs")
        self._copy_seeds = [int(s) for s in state["copy_seeds"]]
        self._episode_index = [int(j) for j in state["episode_index"]]
        self.restarts = int(state.get("restarts", 0))
        self.dropped_episodes = int(state.get("dropped_episodes", 0))
        self._zero_counters()
        if not state.get("started", True):
            self._started = False
            return None
        self._started = True
        actions = [[str(a) for a in copy] for copy in state["actions"]]
        current = self._reset_copies(list(range(self.num_envs)))
        for j in range(max((len(a) for a in actions), default=0)):
            copies = [i for i in range(self.num_envs) if len(actions[i]) > j]
            for i in copies:
                self._workers[i].send_step(actions[i][j])
            for i in copies:
                o, reward, term, trunc, info = self._workers[i].recv_step(self.step_timeout_s)
                if term or trunc:
                    raise EnvPoolError(f"{self.name}: replaying copy {i} ended its episode early; "
                                       "the env is not deterministic given its seed, so it cannot resume exactly")
                self._account(i, reward, info)
                self._actions[i].append(actions[i][j])
                current[i] = self._item(i, o)
        return [current[i] for i in range(self.num_envs)]

    # --- lifecycle ------------------------------------------------------------------------------
    def close(self) -> None:
        """Close every copy; in async mode, join the worker processes; in ray mode, end the actors. Idempotent."""
        if not self._closed:
            self._closed = True
            for worker in self._workers:
                worker.close()

    def __enter__(self) -> EnvPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- helpers ---------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise EnvPoolError(f"{self.name}: the pool is closed")

    @staticmethod
    def _remaining(deadline: float | None) -> float | None:
        return None if deadline is None else max(deadline - time.monotonic(), 0.001)

    def _reset_copies(self, copies: list[int]) -> dict[int, dict[str, Any]]:
        """Reset ``copies`` to their current episode's seed (workers that fail are replaced)."""
        for i in copies:
            self._zero_copy(i)
        pending = list(copies)
        out: dict[int, dict[str, Any]] = {}
        # Resets can be slow (ALFWorld generates and plans its games): report them past a few seconds.
        progress = Progress(f"{self.name}: resetting {len(copies)} envs", len(copies), unit="envs") \
            if len(copies) > 1 else None
        try:
            self._reset_pending(pending, out, progress)
        finally:
            if progress is not None:
                progress.close()
        return out

    def _reset_pending(self, pending: list[int], out: dict[int, dict[str, Any]], progress: Progress | None) -> None:
        while pending:
            errors: dict[int, BaseException] = {}
            for i in pending:
                try:
                    self._workers[i].send_reset(episode_seed(self._copy_seeds[i], self._episode_index[i]))
                except Exception as error:  # noqa: BLE001
                    errors[i] = error
            deadline = None if self.reset_timeout_s is None else time.monotonic() + self.reset_timeout_s
            for i in pending:
                if i in errors:
                    continue
                try:
                    o, _ = self._workers[i].recv_reset(self._remaining(deadline))
                    out[i] = self._item(i, o)
                    if progress is not None:
                        progress.update()
                except Exception as error:  # noqa: BLE001
                    errors[i] = error
            for i, error in errors.items():
                self._restart(i, error)  # a fresh worker; the reset is retried with the same seed
            pending = sorted(errors)

    def _restart(self, i: int, error: BaseException) -> None:
        """Replace copy ``i``'s worker, or stop if it keeps failing."""
        # A stop signal often reaches the workers too (Ctrl-C, a scheduler signalling the process
        # group): their deaths are then the stop, not faults to heal with new processes.
        raise_if_stop_requested()
        self._failures_in_row[i] += 1
        self.restarts += 1
        reason = "no answer within the timeout" if is_timeout(error) else repr(error)
        if self._failures_in_row[i] > self.max_restarts:
            self.close()
            raise EnvPoolError(
                f"{self.name}: env copy {i} failed {self._failures_in_row[i]} times in a row "
                f"(limit: max_restarts={self.max_restarts}); last error: {reason}") from error
        log.warning("%s: env copy %d failed (%s); restarting its worker (restart %d, %d in a row)",
                    self.name, i, reason, self.restarts, self._failures_in_row[i])
        self._workers[i].kill()
        self._workers[i] = self._spawn(self._env_fns[i])
