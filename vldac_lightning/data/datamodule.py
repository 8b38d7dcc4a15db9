"""The rollout DataModule: the env pools, the collector, and the stream of PPO iterations.

It provides; it does not drive. The stream yields one item per PPO iteration, and the
LightningModule (the one owner of the iteration) asks :meth:`RolloutDataModule.collect` for that
iteration's rollout with its current policy, then computes advantages and updates. The stream is
finite (``num_iterations``) and restartable: it resumes at the iteration implied by the trainer's
``global_step``, so ``ckpt_path=...`` continues where a checkpoint left off.

Under DDP (``trainer=ddp``) every rank owns a shard of the pool: ``env.num_envs``,
``algo.rollout_steps`` and an optimizer step's batch are *global* and each rank takes ``1/N`` of them,
with its slice of the single-process seed list, so N ranks step exactly the envs one process would
(docs/config.md#several-gpus-or-nodes-lightning-ddp--fsdp). Evaluation runs on rank 0.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import lightning as L
from torch.utils.data import DataLoader, IterableDataset

from vldac_lightning.envs.factory import LanguageEnvThunk
from vldac_lightning.envs.pool import EnvPool, eval_seeds, train_seeds
from vldac_lightning.rollout.buffer import Rollout
from vldac_lightning.rollout.collector import RolloutCollector, RolloutStats
from vldac_lightning.rollout.episodes import EpisodeCollector
from vldac_lightning.utils.distributed import all_gather_object, rank, split_problem, world_size
from vldac_lightning.utils.rng import capture_rng_state, restore_rng_state

log = logging.getLogger(__name__)


@dataclass
class TrainBatch:
    """One PPO iteration of the stream: the module collects and updates on it in one training step.

    The stream yields positions only, never data: Lightning prefetches one batch ahead, and a
    rollout gathered by the stream would come from the policy *before* the previous iteration's
    updates (off-policy). The module collects when the step runs, with the current weights.
    """

    iteration: int  # PPO iteration (rollout → update) index, 0-based


def env_factory(env_cfg: Any, response_mode: str) -> LanguageEnvThunk:
    """A picklable thunk that builds one language env from the ``env`` config group."""
    from omegaconf import OmegaConf

    spec = OmegaConf.to_container(env_cfg, resolve=True) if not isinstance(env_cfg, dict) else dict(env_cfg)
    return LanguageEnvThunk(spec, response_mode)


class _RolloutStream(IterableDataset):
    def __init__(self, dm: RolloutDataModule) -> None:
        self.dm = dm

    def __iter__(self) -> Iterator[TrainBatch]:
        return self.dm.iterate()


class RolloutDataModule(L.LightningDataModule):
    """Owns the training and evaluation env pools and turns rollouts into minibatches."""

    def __init__(self, env_cfg: Any, algo_cfg: Any, *, response_mode: str, seed: int, pool_mode: str = "async") -> None:
        super().__init__()
        self.env_cfg = env_cfg
        self.algo = algo_cfg
        self.response_mode = response_mode
        self.seed = seed
        self.pool_mode = pool_mode
        self.train_pool: EnvPool | None = None
        self.eval_pool: EnvPool | None = None
        self.collector: RolloutCollector | EpisodeCollector | None = None
        self.last_rollout_stats: RolloutStats | None = None
        self._resume_state: dict[str, Any] | None = None
        # What the running iteration started from (see state_dict), and the optimizer step then.
        self._snapshot: dict[str, Any] | None = None
        self._snapshot_step = -1

    # ---------------------------------------------------------------------------- derived sizes
    @property
    def num_envs(self) -> int:
        """``env.num_envs``: all ranks together."""
        return int(self.env_cfg.num_envs)

    @property
    def local_num_envs(self) -> int:
        """This rank's share of ``env.num_envs``."""
        return self.num_envs // world_size()

    @property
    def local_rollout_steps(self) -> int:
        """This rank's share of ``algo.rollout_steps``."""
        return int(self.algo.rollout_steps) // world_size()

    @property
    def group_size(self) -> int:
        return int(self.env_cfg.get("group_size", 1))

    def grouped_train_seeds(self, base_seed: int) -> list[int]:
        """One training seed per task group, repeated for each of the group's copies: this rank's
        slice of the list a single process would use (groups never straddle two ranks)."""
        k = self.group_size
        seeds = [s for s in train_seeds(base_seed, self.num_envs // k) for _ in range(k)]
        n = self.local_num_envs
        return seeds[rank() * n:(rank() + 1) * n]

    @property
    def steps_per_env(self) -> int:
        return int(self.algo.rollout_steps) // self.num_envs

    @property
    def num_iterations(self) -> int:
        return max(1, int(self.algo.total_env_steps) // int(self.algo.rollout_steps))

    @property
    def optimizer_steps_per_iteration(self) -> int:
        minibatches = int(self.algo.rollout_steps) // int(self.algo.minibatch_size)
        return int(self.algo.ppo_epochs) * minibatches // int(self.algo.grad_accum_steps)

    # ---------------------------------------------------------------------------- lifecycle
    def make_pool(self, n: int, seeds: list[int], group_size: int = 1) -> EnvPool:
        thunk = env_factory(self.env_cfg, self.response_mode)
        get = self.env_cfg.get
        ray = get("ray")  # env.pool_mode=ray's settings (conf/train.yaml)
        return EnvPool([thunk] * n, mode=self.pool_mode, seeds=seeds, name=str(self.env_cfg.id),
                       step_timeout_s=get("step_timeout_s", 60.0), reset_timeout_s=get("reset_timeout_s", 300.0),
                       max_restarts=int(get("max_restarts", 3)), group_size=group_size,
                       ray_options=dict(ray) if ray is not None else None)

    def check_world(self) -> None:
        """The global sizes must split evenly over the ranks actually started (checked at config time
        too, from the trainer config; ``devices=auto`` is only known here)."""
        problem = split_problem(num_envs=self.num_envs, rollout_steps=int(self.algo.rollout_steps),
                                minibatch_size=int(self.algo.minibatch_size),
                                grad_accum_steps=int(self.algo.grad_accum_steps), group_size=self.group_size,
                                ranks=world_size())
        if problem is not None:
            raise ValueError(problem)

    def setup(self, stage: str | None = None) -> None:
        self.check_world()
        if self.train_pool is None and stage in (None, "fit"):
            where = f" on rank {rank()} of {world_size()}" if world_size() > 1 else ""
            log.info("Starting %d %s envs (%s pool)%s", self.local_num_envs, self.env_cfg.id, self.pool_mode, where)
            self.train_pool = self.make_pool(self.local_num_envs, self.grouped_train_seeds(self.seed), self.group_size)
        if self.eval_pool is None and rank() == 0:  # evaluation runs on rank 0 only
            n = int(self.env_cfg.eval_num_envs)
            self.eval_pool = self.make_pool(n, eval_seeds(self.seed, n))

    def teardown(self, stage: str | None = None) -> None:
        for pool in (self.train_pool, self.eval_pool):
            if pool is not None:
                pool.close()
        self.train_pool = self.eval_pool = None

    def eval_episode_seeds(self, n: int) -> list[int]:
        """Held-out seeds: the evaluation range, disjoint from every training seed."""
        return eval_seeds(self.seed, n)

    def train_dataloader(self) -> DataLoader:
        # batch_size=None: the stream already yields whole minibatches; num_workers=0 because
        # generation needs the policy, which lives in this process.
        return DataLoader(_RolloutStream(self), batch_size=None, num_workers=0)

    # ---------------------------------------------------------------------------- resume
    def state_dict(self) -> dict[str, Any]:
        """Saved with every checkpoint: what the next rollout starts from — the training pool's
        episodes (seeds + texts sent, replayed on load) and the RNGs.

        Periodic checkpoints are taken between iterations, where that is the live state. A
        checkpoint taken while an iteration runs (a stop signal mid-rollout) gets the state the
        iteration *started* from: the weights have not changed yet (see :meth:`safe_to_checkpoint`),
        so resuming repeats that iteration exactly.
        """
        state = self._snapshot if self._snapshot is not None else self._live_state()
        if world_size() == 1:
            return state
        # Every rank's pool and RNGs; rank 0 writes the file (a collective: all ranks save together).
        return {"world_size": world_size(), "ranks": all_gather_object(state)}

    def _live_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"rng": capture_rng_state()}
        if self.train_pool is not None and self.collector is not None:
            state["train_pool"] = self.train_pool.state_dict()
        return state

    def end_iteration(self) -> None:
        """Called by the iteration's owner once its updates are done: the live state is current again."""
        self._snapshot = None

    def safe_to_checkpoint(self, global_step: int) -> bool:
        """True where a checkpoint now resumes exactly: between iterations, or inside one before its
        first optimizer step (only the rollout, which is repeated on resume, has happened)."""
        return self._snapshot is None or global_step == self._snapshot_step

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # Applied when the first resumed rollout starts: restoring the RNGs any earlier would let
        # model construction or Lightning's start-up shift them.
        saved = int(state.get("world_size", 1))
        if saved != world_size():
            raise ValueError(
                f"This checkpoint was written by {saved} training process(es) and is resumed on {world_size()}: "
                f"each rank's env pool and RNG state is in it, so resume with the same trainer.devices x "
                f"trainer.num_nodes = {saved}")
        self._resume_state = dict(state["ranks"][rank()]) if "ranks" in state else dict(state)

    def _start_collector(self, policy: Any, iteration: int, needs: Any) -> RolloutCollector | EpisodeCollector:
        assert self.train_pool is not None
        collector: RolloutCollector | EpisodeCollector
        if needs is not None and needs.whole_episodes:
            collector = EpisodeCollector(self.train_pool, policy, self.local_rollout_steps)
        else:
            collector = RolloutCollector(self.train_pool, policy, self.steps_per_env)
        resume, self._resume_state = self._resume_state, None
        if resume is not None and "train_pool" in resume:
            log.info("Restoring %d env episodes from the checkpoint (replaying their actions)", self.local_num_envs)
            collector.obs = self.train_pool.load_state_dict(resume["train_pool"])
        else:
            if iteration > 0:  # iteration 0 starts from its seeds either way: exact
                log.warning("The checkpoint holds no env-pool state (saved by an older version): envs restart "
                            "from fresh seeds, so this resume is not exact")
            collector.reset(self.grouped_train_seeds(self.seed + 7919 * iteration))
        if resume is not None and "rng" in resume:
            restore_rng_state(resume["rng"])
        elif world_size() > 1:  # each rank samples its own stream (a resume restores every rank's RNGs)
            from lightning.fabric.utilities.seed import seed_everything

            seed_everything(self.seed * 1_000 + rank(), verbose=False)
        return collector

    # ---------------------------------------------------------------------------- the stream
    def iterate(self) -> Iterator[TrainBatch]:
        # Resume at the iteration implied by the restored optimizer-step count.
        start = self.trainer.global_step // self.optimizer_steps_per_iteration if self.trainer is not None else 0
        for iteration in range(start, self.num_iterations):
            yield TrainBatch(iteration)

    def collect(self, policy: Any, iteration: int, needs: Any = None, progress: Any = None,
                budget: int | None = None) -> tuple[Rollout, RolloutStats]:
        """Iteration ``iteration``'s rollout, collected with ``policy`` as it is now.

        ``needs`` (an algorithm's ``RolloutNeeds``) says what to record beyond the essentials;
        ``progress(done, total)`` is called after every env step; ``budget`` is the env-step budget
        of a whole-episode rollout (default ``algo.rollout_steps``; fixed-length rollouts ignore it).
        Under DDP ``budget`` is global and each rank collects ``1/N`` of it; the rollout and stats
        returned are this rank's (``RolloutStats.over_ranks`` merges the stats).
        """
        if self.train_pool is None:
            raise RuntimeError("RolloutDataModule.setup('fit') must run before collecting")
        policy.set_action_names(self.train_pool.action_names)
        if self.collector is None:
            self.collector = self._start_collector(policy, iteration, needs)
        self.collector.policy = policy
        # A stop signal during the rollout checkpoints the state the iteration started from (state_dict).
        self._snapshot = self._live_state()
        self._snapshot_step = self.trainer.global_step if self.trainer is not None else 0
        if isinstance(self.collector, EpisodeCollector):
            local = None if budget is None else budget // world_size()
            rollout, stats = self.collector.collect(progress=progress, needs=needs, budget=local)
        else:
            rollout, stats = self.collector.collect(progress=progress, needs=needs)
        self.last_rollout_stats = stats
        return rollout, stats
