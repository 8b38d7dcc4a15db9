"""Periodic held-out evaluation during training (``eval/*`` metrics on the env-step axis)."""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch
from torchmetrics import MeanMetric

from vldac_lightning.envs.pool import success_by_task_type
from vldac_lightning.rollout.collector import run_episodes

log = logging.getLogger(__name__)


def episode_metrics(episodes: list[Any], prefix: str = "eval") -> dict[str, float]:
    """Success rate, return, length and parse-failure rate of finished episodes (torchmetrics)."""
    # Only rank 0 evaluates under DDP: no cross-process sync (the other ranks are not computing these).
    success, ret, length, parse = (MeanMetric(sync_on_compute=False) for _ in range(4))
    for ep in episodes:
        success.update(float(ep.success))
        ret.update(float(ep.episode_return))
        length.update(float(ep.length))
        parse.update(ep.parse_failures / max(ep.length, 1))
    if not episodes:
        return {}
    return {
        f"{prefix}/success_rate": float(success.compute()),
        f"{prefix}/episode_return": float(ret.compute()),
        f"{prefix}/episode_length": float(length.compute()),
        f"{prefix}/parse_failure_rate": float(parse.compute()),
        f"{prefix}/episodes": float(len(episodes)),
        **success_by_task_type(episodes, prefix),  # ALFWorld: one rate per task type
    }


class PeriodicEvaluation(L.Callback):
    """Evaluate on held-out seeds before the first update, every ``every_n_iterations``, and at the end.

    Under DDP only rank 0 evaluates (with the same policy weights as every rank); the other ranks
    wait for it at their next all-reduce (docs/config.md#several-gpus-or-nodes-lightning-ddp--fsdp).
    """

    def __init__(self, every_n_iterations: int = 5, num_episodes: int = 50, do_sample: bool = False) -> None:
        if every_n_iterations < 1:
            raise ValueError(f"callbacks.evaluation.every_n_iterations must be >= 1, got {every_n_iterations}")
        self.every = every_n_iterations
        self.num_episodes = num_episodes
        self.do_sample = do_sample
        self.last_step: int | None = None
        self.history: list[tuple[int, dict[str, float]]] = []

    def evaluate(self, trainer: L.Trainer, module: Any, env_steps: int) -> dict[str, float]:
        if trainer.global_rank != 0:  # DDP: rank 0 evaluates, the others go on to the next rollout
            return {}
        dm = trainer.datamodule
        policy = module.policy
        policy.set_action_names(dm.eval_pool.action_names)
        rng_state = torch.random.get_rng_state()  # evaluation must not shift the training sample stream
        try:
            episodes = run_episodes(policy, dm.eval_pool, dm.eval_episode_seeds(self.num_episodes),
                                    do_sample=self.do_sample)
        finally:  # also when a stop signal cuts it short: the checkpoint written then must be exact
            torch.random.set_rng_state(rng_state)
        metrics = episode_metrics(episodes)
        module.log_at_env_step(metrics, step=env_steps)
        self.last_step = env_steps
        self.history.append((env_steps, metrics))
        log.info("eval @ %d env steps: success %.3f, return %.3f", env_steps,
                 metrics.get("eval/success_rate", float("nan")), metrics.get("eval/episode_return", float("nan")))
        return metrics

    def on_train_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        if trainer.global_step == 0:
            self.evaluate(trainer, pl_module, 0)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if (batch.iteration + 1) % self.every == 0:  # a batch is a whole PPO iteration
            self.evaluate(trainer, pl_module, pl_module.env_steps)

    def on_train_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        if self.last_step != pl_module.env_steps and trainer.global_step > 0:
            self.evaluate(trainer, pl_module, pl_module.env_steps)
        if trainer.world_size > 1:  # every rank returns rank 0's results (a sweeper may ask any of them)
            self.history = trainer.strategy.broadcast(self.history, src=0)
