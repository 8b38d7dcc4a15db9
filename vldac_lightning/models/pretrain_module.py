"""Supervised next-token pretraining of the whole tiny VLM, and its held-out check (docs/pretraining.md).

The loss is the mean negative log-likelihood of the answer tokens (the end token included) given
the image and prompt — the prompt itself is not a target. Every weight trains (no LoRA): the model
is small and randomly initialised. :func:`evaluate_pretrained` measures what RL will rely on, on
examples from held-out pretraining seeds: exact-match state descriptions (greedy) and the JSON parse
rate and action spread of sampled answers to the env's real prompt.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from torch import nn
from transformers import PreTrainedModel, ProcessorMixin

from vldac_lightning.data.pretrain_datamodule import encode_examples, encode_prompts
from vldac_lightning.envs.parsing import parse_action

__all__ = ["ProgressLog", "PretrainModule", "answer_nll", "evaluate_pretrained", "warmup_cosine"]


def answer_nll(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean NLL over answer tokens, token accuracy) for a batch from ``encode_examples``."""
    response_ids, response_mask = batch["response_ids"], batch["response_mask"]
    R = response_ids.shape[1]
    inputs = {k: v for k, v in batch.items() if k not in ("response_ids", "response_mask")}
    inputs["input_ids"] = torch.cat([batch["input_ids"], response_ids], 1)
    inputs["attention_mask"] = torch.cat([batch["attention_mask"], response_mask.to(batch["attention_mask"].dtype)], 1)
    if "mm_token_type_ids" in batch:
        inputs["mm_token_type_ids"] = torch.cat([batch["mm_token_type_ids"], torch.zeros_like(response_ids)], 1)
    # Position P-1+j predicts response token j (the layout VLMPolicy scores in).
    logits = model(**inputs, logits_to_keep=R + 1, use_cache=False).logits[:, :R].float()
    nll = nn.functional.cross_entropy(logits.transpose(1, 2), response_ids, reduction="none")
    mask = response_mask.float()
    accuracy = ((logits.argmax(-1) == response_ids).float() * mask).sum() / mask.sum()
    return (nll * mask).sum() / mask.sum(), accuracy


def warmup_cosine(total_steps: int, warmup_steps: int, min_ratio: float):
    """LR multiplier: linear warm-up, then cosine down to ``min_ratio`` at ``total_steps``."""

    def fn(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
        return min_ratio + 0.5 * (1 - min_ratio) * (1 + math.cos(math.pi * progress))

    return fn


class PretrainModule(L.LightningModule):
    """The backbone under supervised training; logs ``pretrain/loss``, ``pretrain/token_accuracy``, ``pretrain/lr``."""

    def __init__(self, model: PreTrainedModel, *, lr: float, min_lr: float, warmup_steps: int, weight_decay: float,
                 max_steps: int) -> None:
        super().__init__()
        self.model = model
        self.lr, self.min_lr, self.weight_decay = float(lr), float(min_lr), float(weight_decay)
        self.warmup_steps, self.max_steps = int(warmup_steps), int(max_steps)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, accuracy = answer_nll(self.model, batch)
        B = batch["input_ids"].shape[0]
        self.log("pretrain/loss", loss, prog_bar=True, batch_size=B)
        self.log("pretrain/token_accuracy", accuracy, prog_bar=True, batch_size=B)
        self.log("pretrain/lr", self.optimizers().param_groups[0]["lr"], batch_size=B)
        return loss

    def configure_optimizers(self) -> dict[str, Any]:
        opt = torch.optim.AdamW(self.model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        fn = warmup_cosine(self.max_steps, self.warmup_steps, self.min_lr / self.lr)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, fn)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class ProgressLog(L.Callback):
    """A log line every ``every`` steps (step, loss, token accuracy, elapsed, ETA): Lightning's
    progress bar does not reach log files or a build started from training."""

    def __init__(self, every: int = 50) -> None:
        self.every = max(int(every), 1)
        self.start = 0.0
        self.first_step = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        import time

        self.start, self.first_step = time.perf_counter(), int(trainer.global_step)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        import logging
        import time

        step = int(trainer.global_step)
        if step % self.every and step != trainer.max_steps:
            return
        elapsed = time.perf_counter() - self.start
        rate = (step - self.first_step) / max(elapsed, 1e-9)
        eta = (trainer.max_steps - step) / rate if rate > 0 else float("nan")
        m = trainer.callback_metrics
        logging.getLogger("vldac_lightning.pretrain").info(
            "pretrain step %d/%d  loss %.3f  token accuracy %.3f  %.0f s elapsed, ~%.0f s left", step,
            trainer.max_steps, float(m.get("pretrain/loss", float("nan"))),
            float(m.get("pretrain/token_accuracy", float("nan"))), elapsed, eta)


@torch.no_grad()
def _generate(model: PreTrainedModel, processor: ProcessorMixin, examples: Sequence[Any], *, do_sample: bool,
              max_new_tokens: int) -> list[str]:
    tok = processor.tokenizer
    enc = encode_prompts(processor, examples)
    out = model.generate(**enc, do_sample=do_sample, max_new_tokens=max_new_tokens, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    return tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)


def evaluate_pretrained(model: PreTrainedModel, processor: ProcessorMixin, env_ids: Sequence[str], *, seed: int,
                        num_per_env: int = 100, batch_size: int = 25, max_new_tokens: int = 64,
                        sample_seed: int = 0) -> dict[str, float]:
    """Held-out metrics per env (pretraining stream 1, disjoint from the training stream's deals):

    - ``<env>/describe_exact``: greedy state descriptions equal to the truth, character for character;
    - ``<env>/json_parse_rate``: sampled (T = 1, as RL samples) answers to the real prompt that parse
      to a legal action; ``<env>/json_thoughts_exact``: their thoughts equal the description;
    - ``<env>/action_tv``: total-variation distance of the sampled actions from uniform (0 = uniform).
    """
    from vldac_lightning.data.pretrain_data import PretrainStream

    was_training = model.training
    model.eval()
    metrics: dict[str, float] = {}
    stream = PretrainStream(list(env_ids), seed=seed, stream=1)
    try:
        for which, env_id in enumerate(env_ids):
            indices = [which + len(env_ids) * i for i in range(num_per_env)]
            describe = [stream.example(i, "describe") for i in indices]
            prompts = [stream.example(i, "json") for i in indices]
            exact = parsed = thoughts = 0
            actions: Counter[str] = Counter()
            with torch.random.fork_rng():
                torch.manual_seed(sample_seed)
                for lo in range(0, num_per_env, batch_size):
                    texts = _generate(model, processor, describe[lo:lo + batch_size], do_sample=False,
                                      max_new_tokens=max_new_tokens)
                    exact += sum(t.strip() == ex.state for t, ex in zip(texts, describe[lo:lo + batch_size]))
                    texts = _generate(model, processor, prompts[lo:lo + batch_size], do_sample=True,
                                      max_new_tokens=max_new_tokens)
                    for text, ex in zip(texts, prompts[lo:lo + batch_size]):
                        result = parse_action(text, ex.legal_actions, mode="json")
                        if result.parse_ok and result.action_valid:
                            parsed += 1
                            actions[str(result.action)] += 1
                            thoughts += _thoughts(text) == ex.state
            name = env_id.split("/")[-1]
            legal = prompts[0].legal_actions
            total = max(sum(actions.values()), 1)
            metrics[f"{name}/describe_exact"] = exact / num_per_env
            metrics[f"{name}/json_parse_rate"] = parsed / num_per_env
            metrics[f"{name}/json_thoughts_exact"] = thoughts / num_per_env
            metrics[f"{name}/action_tv"] = 0.5 * sum(abs(actions[a] / total - 1 / len(legal)) for a in legal)
    finally:
        stream.close()
        model.train(was_training)
    return metrics


def _thoughts(text: str) -> str | None:
    try:
        value = json.loads(text.strip())
    except ValueError:
        return None
    return value.get("thoughts") if isinstance(value, dict) else None


def batch_loss(model: nn.Module, processor: ProcessorMixin, examples: Sequence[Any]) -> float:
    """The answer NLL of ``examples`` (tests and quick checks)."""
    with torch.no_grad():
        return float(answer_nll(model, encode_examples(processor, examples))[0])
