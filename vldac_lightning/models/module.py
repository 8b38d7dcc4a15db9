"""The LightningModule: VLM actor + step critic, and the one owner of the PPO iteration.

One training step is one PPO iteration, read top to bottom in :meth:`ActorCriticModule.training_step`:
collect a rollout (the DataModule's pools) → the algorithm's advantages → ``ppo_epochs`` × minibatches
→ the algorithm's loss → gradient accumulation over ``grad_accum_steps`` minibatches → optimizer
steps. Manual optimisation, because an iteration takes several optimizer steps. What differs between
methods (VL-DAC, RL4VLM, LOOP, GRPO, GiGPO) is behind ``self.algorithm`` (vldac_lightning/algo/base.py).

Under DDP every rank runs this same iteration on its shard of the rollout: the metrics and the
advantage statistics are all-reduced (utils/distributed.py), the strategy averages the gradients,
and every rank takes the same number of backward passes and optimizer steps, so the weights stay
identical (docs/config.md#several-gpus-or-nodes-lightning-ddp--fsdp).
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import MLFlowLogger
from omegaconf import DictConfig
from torch.nn.utils.rnn import pad_sequence

from vldac_lightning.algo.advantages import explained_variance
from vldac_lightning.algo.base import build_algorithm
from vldac_lightning.algo.losses import LossStats
from vldac_lightning.models.engines import build_engine
from vldac_lightning.models.loading import apply_lora, load_backbone
from vldac_lightning.models.policy import VLMPolicy
from vldac_lightning.models.sampling import SamplingConfig
from vldac_lightning.rollout.buffer import Minibatch, Rollout
from vldac_lightning.rollout.collector import RolloutStats
from vldac_lightning.utils.distributed import all_reduce_max, local_minibatch, world_size
from vldac_lightning.utils.interrupt import raise_if_stop_requested, sync_stop_request
from vldac_lightning.utils.progress import Progress, eta, format_seconds

log = logging.getLogger(__name__)


def cosine_lambda(total_steps: int, base_lr: float, min_lr: float):
    """LR multiplier: cosine from ``base_lr`` to ``min_lr`` over ``total_steps`` optimizer steps."""

    def fn(step: int) -> float:
        progress = min(step / max(total_steps - 1, 1), 1.0)
        lr = min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * progress))
        return lr / base_lr

    return fn


class ActorCriticModule(L.LightningModule):
    """Holds the policy (LoRA VLM + value head) and performs the PPO updates."""

    def __init__(self, model_cfg: DictConfig, algo_cfg: DictConfig, optimizer_cfg: DictConfig,
                 optimizer_steps_per_iteration: int, num_iterations: int) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.strict_loading = False  # checkpoints hold only the trainable weights (LoRA + value head)
        self.model_cfg = model_cfg
        self.algo = algo_cfg
        self.algorithm = build_algorithm(algo_cfg)
        self.optimizer_cfg = optimizer_cfg
        self.k = optimizer_steps_per_iteration
        self.num_iterations = num_iterations
        self.policy: VLMPolicy | None = None
        self._micro = 0
        self._bad_micro = False
        self._bad_updates = 0
        self._iter_stats: dict[str, list[float]] = defaultdict(list)
        self._progress: Progress | None = None
        self._run_start: tuple[float, int] | None = None  # (time, first iteration of this process)
        self.iteration = 0
        # The run's resolved config (a plain dict), saved in every checkpoint so a resume or an
        # evaluation can check it is given the same env/model/algorithm (utils/resume.py).
        self.run_config: dict[str, Any] | None = None
        self._env_steps: int | None = None  # collected so far; None until known (fresh run or old checkpoint)

    # ----------------------------------------------------------------------------- model
    def configure_model(self) -> None:
        if self.policy is not None:
            return
        backbone, processor = load_backbone(self.model_cfg)
        _check_context(backbone, int(self.model_cfg.sampling.max_new_tokens))
        peft_model = apply_lora(backbone, self.model_cfg.lora, bool(self.model_cfg.gradient_checkpointing))
        s = self.model_cfg.sampling
        self.policy = VLMPolicy(
            peft_model, processor,
            value_hidden_sizes=list(self.model_cfg.value_head.hidden_sizes),
            sampling=SamplingConfig(temperature=float(s.temperature), top_k=int(s.top_k), top_p=float(s.top_p),
                                    max_new_tokens=int(s.max_new_tokens)),
            response_mode=str(self.model_cfg.response_mode),
            # Without a KL to the base model, acting skips the adapter-free forward.
            kl_reference=str(self.algo.kl_reference) if self.algorithm.needs().ref_logprobs else "old",
            value_stop_grad=self.algorithm.value_stop_grad,
            engine=build_engine(self.model_cfg.get("engine")),
        )

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        assert self.policy is not None
        return [p for p in self.policy.parameters() if p.requires_grad]

    def configure_optimizers(self) -> Any:
        params = self.trainable_parameters()
        cfg = self.optimizer_cfg
        if cfg.name != "adam":
            raise ValueError(f"optimizer.name={cfg.name!r} is not supported; use 'adam'")
        opt = torch.optim.Adam(params, lr=float(cfg.lr), eps=float(cfg.eps), weight_decay=float(cfg.weight_decay))
        total = max(self.num_iterations * self.k, 1)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine_lambda(total, float(cfg.lr), float(cfg.min_lr)))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Keep only what training changes: the frozen backbone is rebuilt (tiny) or reloaded
        # (checkpoint) from the config, so a 7B run saves megabytes, not 15 GB.
        trainable = {n for n, p in self.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}
        # A resumed run keeps writing to the same MLflow run (train.py reads this back).
        for logger in self.loggers if self._trainer is not None else []:
            run_id = getattr(logger, "run_id", None)
            if run_id is not None and isinstance(logger, MLFlowLogger):
                checkpoint["mlflow_run_id"] = str(run_id)
        checkpoint["bad_updates_in_row"] = int(self._bad_updates)
        if self.run_config is not None:
            checkpoint["vldac_config"] = self.run_config
        checkpoint["env_steps"] = int(self.env_steps)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._bad_updates = int(checkpoint.get("bad_updates_in_row", 0))
        steps = checkpoint.get("env_steps")  # absent in older checkpoints: counted from the iteration
        self._env_steps = None if steps is None else int(steps)

    # ----------------------------------------------------------------------------- env-step x-axis
    @property
    def env_steps(self) -> int:
        """Env steps collected so far (the x-axis of every metric, docs/metrics.md#conventions)."""
        return int(self._env_steps or 0)

    def start_iteration(self, iteration: int) -> None:
        self.iteration = iteration
        if self._run_start is None:
            self._run_start = (time.monotonic(), iteration)
        self._progress = Progress(f"iteration {iteration + 1}/{self.num_iterations}: rollout", 1, unit="steps")

    def rollout_progress(self, done: int, total: int) -> None:
        if self._progress is not None:
            self._progress.set(done, total)
            if done == total:
                self._progress.close()
                self._progress = None

    def record_rollout(self, iteration: int, rollout: Rollout, stats: RolloutStats, advantages: torch.Tensor,
                       returns: torch.Tensor | None) -> None:
        """Log ``rollout/*`` metrics (docs/metrics.md#rollout-metrics) of a finished rollout at its env-step count."""
        metrics = stats.metrics()
        if returns is not None:  # a critic: how much of the return its values explain
            values, targets = rollout.values, returns
            if rollout.valid is not None:
                values, targets = values[rollout.valid], returns[rollout.valid]
            metrics["train/explained_variance"] = explained_variance(values.flatten(), targets.flatten())
        metrics["rollout/iteration"] = float(iteration)
        self.log_at_env_step(metrics)
        for key in ("rollout/success_rate", "rollout/episode_return"):
            if key in metrics:
                self.log(key.split("/")[1], metrics[key], prog_bar=True, logger=False)

    def log_at_env_step(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Log to every logger with environment steps as the x-axis (docs/metrics.md#conventions)."""
        clean = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
        if self._trainer is None or not clean:
            return
        for logger in self.loggers:
            logger.log_metrics(clean, step=self.env_steps if step is None else step)

    # ----------------------------------------------------------------------------- the iteration
    def training_step(self, batch: Any, batch_idx: int) -> None:
        """One PPO iteration: collect → advantages → epochs × minibatches → loss → optimizer steps."""
        policy, algorithm, datamodule = self.policy, self.algorithm, self.trainer.datamodule
        assert policy is not None
        iteration = batch.iteration

        # 1. Rollout with the current policy (π_old, V_old, and whatever else the algorithm needs).
        sync_stop_request()  # DDP: a signal to any rank stops all of them here, together
        self.start_iteration(iteration)
        rollout_steps = int(self.algo.rollout_steps)
        if self._env_steps is None:  # fresh run, or a checkpoint from before env steps were saved
            self._env_steps = iteration * rollout_steps
        # Whole-episode rollouts end on whole rounds; what one overshoots comes off the next one's budget,
        # so every method has used (iteration + 1) · rollout_steps env steps, up to one round.
        budget = (iteration + 1) * rollout_steps - self._env_steps
        rollout, stats = datamodule.collect(policy, iteration, algorithm.needs(), progress=self.rollout_progress,
                                            budget=budget)
        stats = stats.over_ranks()  # DDP: every rank's episodes and counters (metrics, env-step count)
        self._env_steps += int(stats.steps)

        # 2. Advantages and targets, once, when the rollout ends.
        targets = algorithm.targets(rollout)
        self.record_rollout(iteration, rollout, stats, targets.advantages, targets.returns)
        self.log_at_env_step(targets.metrics)

        # 3. Epochs × minibatches; gradients accumulate over grad_accum_steps minibatches.
        frozen = algorithm.policy_frozen(iteration)
        generator = torch.Generator().manual_seed(datamodule.seed * 1_000_003 + iteration)
        # A varying number of steps (whole-episode rollouts) is split into the usual number of minibatches.
        # Under DDP each rank holds 1/N of the rollout and of every minibatch.
        minibatch_size, accum = local_minibatch(int(self.algo.minibatch_size), int(self.algo.grad_accum_steps),
                                                world_size())
        local_steps = rollout_steps // world_size()
        num_minibatches = None if rollout.num_steps == local_steps else local_steps // minibatch_size
        self.update_mode()
        for _epoch in range(int(self.algo.ppo_epochs)):
            for mb in rollout.minibatches(targets.advantages, targets.returns, minibatch_size,
                                          generator, num_minibatches=num_minibatches):
                raise_if_stop_requested()  # a stop signal ends an update between minibatches
                if len(mb.steps):  # a short whole-episode rollout may leave a minibatch empty: no loss
                    loss, loss_stats = self.minibatch_loss(mb, policy_frozen=frozen)
                    if torch.isfinite(loss):
                        self.manual_backward(loss / accum)
                    else:
                        self._bad_micro = True
                        self._zero_backward()
                    self._record(loss_stats, loss)
                else:
                    self._zero_backward()
                self._micro += 1
                if self._micro % accum == 0:
                    self._optimizer_step()
        datamodule.end_iteration()
        self._flush_iteration_stats(frozen, iteration)

    def update_mode(self) -> None:
        """Train mode with dropout off: the update scores exactly the network the rollout sampled from.

        Rollouts act in eval mode (no dropout), so with LoRA dropout > 0 a train-mode update would
        see a different network: the first minibatch's ratios would not be 1 and the critic's inputs
        would be noisy. Train mode stays on for what it also switches (gradient checkpointing).
        """
        policy = self.policy
        assert policy is not None
        policy.train()
        for module in policy.modules():
            if isinstance(module, torch.nn.modules.dropout._DropoutNd):
                module.eval()

    def minibatch_loss(self, mb: Minibatch, *, policy_frozen: bool) -> tuple[torch.Tensor, LossStats]:
        """Re-score a minibatch with the current weights and hand it to the algorithm's loss."""
        policy = self.policy
        assert policy is not None
        device = policy.device
        mb = mb.to(device)
        enc = policy.encode_steps(mb.steps)  # the rollout's processor outputs, re-batched
        R = mb.old_logprobs.shape[1]
        response_ids = pad_sequence([r.response_ids for r in mb.steps], batch_first=True,
                                    padding_value=policy.pad_token_id)
        response_ids = torch.nn.functional.pad(response_ids, (0, R - response_ids.shape[1]),
                                               value=policy.pad_token_id).to(device)
        logprobs, values = policy.score(enc, response_ids, mb.response_mask, with_values=self.algorithm.has_critic)
        return self.algorithm.loss(mb, logprobs, values, policy_frozen=policy_frozen)

    def _optimizer_step(self) -> None:
        opt = self.optimizers()
        sched = self.lr_schedulers()
        params = self.trainable_parameters()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, float(self.algo.max_grad_norm))
        bad = self._bad_micro or not torch.isfinite(grad_norm)
        if world_size() > 1:  # one rank's NaN loss skips the update on every rank
            bad = bool(all_reduce_max(torch.tensor([float(bad)]))[0] > 0)
        self._bad_micro = False
        if bad:
            # A NaN/Inf loss or gradient must not reach the weights; skip, count, and stop if it
            # keeps happening (the last checkpoint stays intact).
            opt.zero_grad(set_to_none=True)
            self._bad_updates += 1
            self._iter_stats["train/skipped_updates"].append(1.0)
            log.warning("Skipped an update with a non-finite loss or gradient (%d in a row)", self._bad_updates)
            # Logged now, not at the iteration's end: the run may stop before it gets there.
            self.log_at_env_step({"train/skipped_updates_in_row": float(self._bad_updates)})
            if self._bad_updates >= int(self.algo.max_bad_updates):
                raise FloatingPointError(
                    f"{self._bad_updates} updates in a row had a NaN/Inf loss or gradient; stopping. "
                    "Lower optimizer.lr or check the reward scale; the last checkpoint is intact.")
            # Still step (every gradient is None, so Adam changes nothing): LightningOptimizer.step()
            # is what advances global_step, which keeps the LR schedule and checkpoints on cadence.
            opt.step()
            sched.step()
            return
        self._bad_updates = 0
        opt.step()
        # A finite gradient times a huge learning rate can still overflow the weights: stop before
        # anything evaluates, logs or checkpoints them (the checkpoint writer refuses them too).
        if not bool(torch.stack([torch.isfinite(p).all() for p in params]).all()):
            raise FloatingPointError(
                f"optimizer step {self.global_step} made trainable weights NaN/Inf (optimizer.lr="
                f"{self.optimizer_cfg.lr}); stopping. Lower optimizer.lr; the checkpoints already written are intact.")
        opt.zero_grad(set_to_none=True)
        sched.step()
        self._iter_stats["train/grad_norm"].append(float(grad_norm))
        self._iter_stats["train/lr"].append(float(sched.get_last_lr()[0]))

    def _zero_backward(self) -> None:
        """Under DDP, a backward pass that adds nothing: every rank must take part in each gradient
        all-reduce, also one whose minibatch is empty or whose loss is not finite."""
        if world_size() > 1:
            self.manual_backward(torch.stack([p.sum() for p in self.trainable_parameters()]).sum() * 0.0)

    def _record(self, stats: LossStats, loss: torch.Tensor) -> None:
        s = self._iter_stats
        s["train/loss"].append(float(loss.detach()))
        s["train/policy_loss"].append(float(stats.policy_loss))
        if stats.value_loss is not None:
            s["train/value_loss"].append(float(stats.value_loss))
        s["train/kl"].append(float(stats.kl))
        s["train/clip_fraction"].append(float(stats.clip_fraction))
        s["train/approx_kl"].append(float(stats.approx_kl))

    def _flush_iteration_stats(self, frozen: bool, iteration: int) -> None:
        metrics = {k: sum(v) / len(v) for k, v in self._iter_stats.items() if v}
        metrics["train/policy_frozen"] = float(frozen)
        self._iter_stats.clear()
        self.log_at_env_step(metrics, step=self.env_steps)
        if "train/value_loss" in metrics:
            self.log("v_loss", metrics["train/value_loss"], prog_bar=True, logger=False)
        self.log("env_steps", float(self.env_steps), prog_bar=True, logger=False)
        if self._run_start is not None and self.global_rank == 0:  # one line per iteration: where the run is and when it ends
            t0, first = self._run_start
            elapsed, done = time.monotonic() - t0, iteration + 1 - first
            log.info("iteration %d/%d done: %d env steps, %s elapsed, ETA %s", iteration + 1, self.num_iterations,
                     self.env_steps, format_seconds(elapsed), eta(elapsed, done, self.num_iterations - first))


def _check_context(backbone: Any, max_new_tokens: int) -> None:
    """The response alone must fit the model's context window (the prompt needs room too); known only
    once the model's config is loaded."""
    from vldac_lightning.utils.config import ConfigError

    text_config = backbone.config.get_text_config() if hasattr(backbone.config, "get_text_config") else backbone.config
    limit = getattr(text_config, "max_position_embeddings", None)
    if limit and max_new_tokens >= int(limit):
        raise ConfigError(f"model.sampling.max_new_tokens={max_new_tokens} does not fit this model's context of "
                          f"{limit} tokens, which also holds the prompt: lower it (the model configs use 8-256)")
