"""The LightningModule: VLM actor + step critic, updated with VL-DAC (or a baseline) by hand.

Manual optimisation because one PPO iteration is not one "batch": the DataModule streams
``ppo_epochs × minibatches`` of a fresh rollout, gradients accumulate over ``grad_accum_steps``
minibatches, and the first ``warmup_updates`` iterations train the value head only.
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
from vldac_lightning.algo.losses import LossStats, vldac_loss
from vldac_lightning.models.loading import apply_lora, load_backbone
from vldac_lightning.models.policy import VLMPolicy
from vldac_lightning.models.sampling import SamplingConfig
from vldac_lightning.rollout.buffer import Rollout
from vldac_lightning.rollout.collector import RolloutStats
from vldac_lightning.utils.interrupt import raise_if_stop_requested
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

    # ----------------------------------------------------------------------------- model
    def configure_model(self) -> None:
        if self.policy is not None:
            return
        backbone, processor = load_backbone(self.model_cfg)
        peft_model = apply_lora(backbone, self.model_cfg.lora, bool(self.model_cfg.gradient_checkpointing))
        s = self.model_cfg.sampling
        self.policy = VLMPolicy(
            peft_model, processor,
            value_hidden_sizes=list(self.model_cfg.value_head.hidden_sizes),
            sampling=SamplingConfig(temperature=float(s.temperature), top_k=int(s.top_k), top_p=float(s.top_p),
                                    max_new_tokens=int(s.max_new_tokens)),
            response_mode=str(self.model_cfg.response_mode),
            kl_reference=str(self.algo.kl_reference),
            merge_lora_for_generation=bool(self.model_cfg.get("merge_lora_for_generation", False)),
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

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._bad_updates = int(checkpoint.get("bad_updates_in_row", 0))

    # ----------------------------------------------------------------------------- hooks from the stream
    def env_steps_after(self, iteration: int) -> int:
        """Env steps collected once iteration ``iteration`` (0-based) has its rollout."""
        return (iteration + 1) * int(self.algo.rollout_steps)

    @property
    def env_steps(self) -> int:
        return self.env_steps_after(self.iteration)

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
                       returns: torch.Tensor) -> None:
        """Log ``rollout/*`` metrics (docs/metrics.md#rollout-metrics) of a finished rollout at its env-step count."""
        metrics = stats.metrics()
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
        if self._trainer is None:
            return
        for logger in self.loggers:
            logger.log_metrics(clean, step=self.env_steps if step is None else step)

    # ----------------------------------------------------------------------------- the update
    def policy_frozen(self, iteration: int) -> bool:
        return iteration < int(self.algo.warmup_updates)

    def training_step(self, batch: Any, batch_idx: int) -> None:
        raise_if_stop_requested()  # a stop signal ends an update between minibatches, not after the iteration
        policy = self.policy
        assert policy is not None
        mb = self.trainer.datamodule.minibatch(batch)
        policy.train()
        enc = policy.encode_steps(mb.steps)  # the rollout's processor outputs, re-batched
        R = mb.old_logprobs.shape[1]
        response_ids = pad_sequence([r.response_ids for r in mb.steps], batch_first=True,
                                    padding_value=policy.pad_token_id)
        response_ids = torch.nn.functional.pad(response_ids, (0, R - response_ids.shape[1]),
                                               value=policy.pad_token_id).to(self.device)
        mask = mb.response_mask.to(self.device)
        logprobs, values = policy.score(enc, response_ids, mask, with_values=True)
        frozen = self.policy_frozen(batch.iteration)
        loss, stats = vldac_loss(
            logprobs, mb.old_logprobs.to(self.device),
            mb.ref_logprobs.to(self.device) if mb.ref_logprobs is not None else mb.old_logprobs.to(self.device),
            mask, mb.advantages.to(self.device), values, mb.returns.to(self.device),
            clip_eps=float(self.algo.clip_eps), kl_beta=float(self.algo.kl_beta),
            value_coef=float(self.algo.value_coef), policy_frozen=frozen,
            old_values=mb.old_values.to(self.device),
            value_clip_eps=self.algo.value_clip_eps,
            step_mask=mb.valid.to(self.device) if mb.valid is not None else None,
        )
        accum = int(self.algo.grad_accum_steps)
        if torch.isfinite(loss):
            self.manual_backward(loss / accum)
        else:
            self._bad_micro = True
        self._record(stats, loss)
        self._micro += 1
        if self._micro % accum == 0:
            self._optimizer_step()
        if batch.last_of_iteration:
            self._flush_iteration_stats(frozen, batch.iteration)

    def _optimizer_step(self) -> None:
        opt = self.optimizers()
        sched = self.lr_schedulers()
        params = self.trainable_parameters()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, float(self.algo.max_grad_norm))
        bad = self._bad_micro or not torch.isfinite(grad_norm)
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
        opt.zero_grad(set_to_none=True)
        sched.step()
        self._iter_stats["train/grad_norm"].append(float(grad_norm))
        self._iter_stats["train/lr"].append(float(sched.get_last_lr()[0]))

    def _record(self, stats: LossStats, loss: torch.Tensor) -> None:
        s = self._iter_stats
        s["train/loss"].append(float(loss.detach()))
        s["train/policy_loss"].append(float(stats.policy_loss))
        s["train/value_loss"].append(float(stats.value_loss))
        s["train/kl"].append(float(stats.kl))
        s["train/clip_fraction"].append(float(stats.clip_fraction))
        s["train/approx_kl"].append(float(stats.approx_kl))

    def _flush_iteration_stats(self, frozen: bool, iteration: int) -> None:
        metrics = {k: sum(v) / len(v) for k, v in self._iter_stats.items() if v}
        metrics["train/policy_frozen"] = float(frozen)
        self._iter_stats.clear()
        self.log_at_env_step(metrics, step=self.env_steps_after(iteration))
        if "train/value_loss" in metrics:
            self.log("v_loss", metrics["train/value_loss"], prog_bar=True, logger=False)
        self.log("env_steps", float(self.env_steps_after(iteration)), prog_bar=True, logger=False)
        if self._run_start is not None:  # one line per iteration: where the run is and when it ends
            t0, first = self._run_start
            elapsed, done = time.monotonic() - t0, iteration + 1 - first
            log.info("iteration %d/%d done: %d env steps, %s elapsed, ETA %s", iteration + 1, self.num_iterations,
                     self.env_steps_after(iteration), format_seconds(elapsed),
                     eta(elapsed, done, self.num_iterations - first))
