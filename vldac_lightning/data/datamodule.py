"""The rollout DataModule: every PPO iteration streams a fresh on-policy rollout.

Iteration i: collect T×N env steps with the current policy → GAE + standardised advantages →
``ppo_epochs`` × minibatches of that rollout, yielded to the LightningModule one at a time.
The stream is finite (``num_iterations``) and restartable: it resumes at the iteration implied by
the trainer's ``global_step``, so ``ckpt_path=...`` continues where a checkpoint left off.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, IterableDataset

from vldac_lightning.algo.advantages import compute_gae, standardize
from vldac_lightning.envs.factory import LanguageEnvThunk
from vldac_lightning.envs.pool import EnvPool, eval_seeds, train_seeds
from vldac_lightning.rollout.buffer import Minibatch
from vldac_lightning.rollout.collector import RolloutCollector, RolloutStats
from vldac_lightning.utils.rng import capture_rng_state, restore_rng_state

log = logging.getLogger(__name__)


@dataclass
class TrainBatch:
    """A placeholder for one minibatch, resolved by :meth:`RolloutDataModule.minibatch`.

    Lightning prefetches one batch ahead. If the stream itself collected rollouts, the next
    iteration's rollout would be gathered *before* the current iteration's last update — one update
    off-policy. So the stream only yields positions; the rollout is collected when the module asks
    for the first minibatch of an iteration, i.e. after every update of the previous one.
    """

    iteration: int  # PPO iteration (rollout → update) index, 0-based
    index: int  # minibatch position within the iteration (epoch-major)
    first_of_iteration: bool
    last_of_iteration: bool


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
        self.module: Any = None  # the ActorCriticModule, attached by train()
        self.train_pool: EnvPool | None = None
        self.eval_pool: EnvPool | None = None
        self.collector: RolloutCollector | None = None
        self.last_rollout_stats: RolloutStats | None = None
        self._minibatches: list[Minibatch] | None = None
        self._iteration = -1
        self._resume_state: dict[str, Any] | None = None
        # What the running iteration started from (see state_dict), and the optimizer step then.
        self._snapshot: dict[str, Any] | None = None
        self._snapshot_step = -1

    # ---------------------------------------------------------------------------- derived sizes
    @property
    def num_envs(self) -> int:
        return int(self.env_cfg.num_envs)

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
    def attach(self, module: Any) -> None:
        self.module = module

    def make_pool(self, n: int, seeds: list[int]) -> EnvPool:
        thunk = env_factory(self.env_cfg, self.response_mode)
        get = self.env_cfg.get
        return EnvPool([thunk] * n, mode=self.pool_mode, seeds=seeds, name=str(self.env_cfg.id),
                       step_timeout_s=get("step_timeout_s", 60.0), reset_timeout_s=get("reset_timeout_s", 300.0),
                       max_restarts=int(get("max_restarts", 3)))

    def setup(self, stage: str | None = None) -> None:
        if self.train_pool is None and stage in (None, "fit"):
            log.info("Starting %d %s envs (%s pool)", self.num_envs, self.env_cfg.id, self.pool_mode)
            self.train_pool = self.make_pool(self.num_envs, train_seeds(self.seed, self.num_envs))
        if self.eval_pool is None:
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
        if self._snapshot is not None:
            return self._snapshot
        return self._live_state()

    def _live_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"rng": capture_rng_state()}
        if self.train_pool is not None and self.collector is not None:
            state["train_pool"] = self.train_pool.state_dict()
        return state

    def safe_to_checkpoint(self, global_step: int) -> bool:
        """True where a checkpoint now resumes exactly: between iterations, or inside one before its
        first optimizer step (only the rollout, which is repeated on resume, has happened)."""
        return self._snapshot is None or global_step == self._snapshot_step

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # Applied when the first resumed rollout starts: restoring the RNGs any earlier would let
        # model construction or Lightning's start-up shift them.
        self._resume_state = dict(state)

    def _start_collector(self, iteration: int) -> RolloutCollector:
        assert self.train_pool is not None and self.module is not None
        collector = RolloutCollector(self.train_pool, self.module.policy, self.steps_per_env)
        resume, self._resume_state = self._resume_state, None
        if resume is not None and "train_pool" in resume:
            log.info("Restoring %d env episodes from the checkpoint (replaying their actions)", self.num_envs)
            collector.obs = self.train_pool.load_state_dict(resume["train_pool"])
        else:
            if iteration > 0:  # iteration 0 starts from its seeds either way: exact
                log.warning("The checkpoint holds no env-pool state (saved by an older version): envs restart "
                            "from fresh seeds, so this resume is not exact")
            collector.reset(train_seeds(self.seed + 7919 * iteration, self.num_envs))
        if resume is not None and "rng" in resume:
            restore_rng_state(resume["rng"])
        return collector

    # ---------------------------------------------------------------------------- the stream
    @property
    def minibatches_per_iteration(self) -> int:
        return int(self.algo.ppo_epochs) * (int(self.algo.rollout_steps) // int(self.algo.minibatch_size))

    def iterate(self) -> Iterator[TrainBatch]:
        if self.module is None:
            raise RuntimeError("RolloutDataModule.attach(module) must run before iterating")
        # Resume at the iteration implied by the restored optimizer-step count.
        start = self.module.global_step // self.optimizer_steps_per_iteration
        n = self.minibatches_per_iteration
        for iteration in range(start, self.num_iterations):
            for j in range(n):
                yield TrainBatch(iteration, j, first_of_iteration=j == 0, last_of_iteration=j == n - 1)

    def minibatch(self, batch: TrainBatch) -> Minibatch:
        """The minibatch at ``batch``'s position; the first one of an iteration collects the rollout."""
        if batch.first_of_iteration or self._minibatches is None or self._iteration != batch.iteration:
            self._prepare(batch.iteration)
        assert self._minibatches is not None
        if batch.last_of_iteration:
            self._snapshot = None  # the iteration's updates end with this minibatch
        return self._minibatches[batch.index]

    def _prepare(self, iteration: int) -> None:
        """Collect a rollout with the current policy → advantages → all minibatches of the iteration."""
        module = self.module
        if module is None or self.train_pool is None:
            raise RuntimeError("RolloutDataModule.attach(module) and setup('fit') must run before training")
        policy = module.policy
        policy.set_action_names(self.train_pool.action_names)
        if self.collector is None:
            self.collector = self._start_collector(iteration)
        module.start_iteration(iteration)
        self._snapshot, self._snapshot_step = self._live_state(), module.global_step
        rollout, stats = self.collector.collect(progress=module.rollout_progress)
        self.last_rollout_stats = stats
        adv, ret = compute_gae(rollout.rewards, rollout.values, rollout.next_values, rollout.terminated,
                               rollout.truncated, float(self.algo.gamma), float(self.algo.gae_lambda))
        module.record_rollout(iteration, rollout, stats, adv, ret)
        if self.algo.normalize_advantages:
            # Steps of episodes lost with a crashed env worker (rollout.valid False) stay out of the
            # statistics; the loss masks them too.
            adv = standardize(adv, rollout.valid)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + iteration)
        self._minibatches = [mb for _ in range(int(self.algo.ppo_epochs))
                             for mb in rollout.minibatches(adv, ret, int(self.algo.minibatch_size), generator)]
        self._iteration = iteration
