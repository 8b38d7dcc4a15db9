"""The update sees the network the rollout sampled from (first-minibatch ratio 1 with LoRA dropout),
and RL4VLM's value_stop_grad switch decides whether the value loss reaches the LoRA weights."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from omegaconf import DictConfig

Compose = Callable[..., DictConfig]


def build(cfg: DictConfig) -> Any:
    from vldac_lightning.models.module import ActorCriticModule

    module = ActorCriticModule(cfg.model, cfg.algo, cfg.optimizer, optimizer_steps_per_iteration=1, num_iterations=1)
    module.configure_model()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a non-zero adapter, so that dropout on its input changes the output
        for name, p in module.policy.model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return module


def rollout_of(module: Any, cfg: DictConfig) -> Any:
    from vldac_lightning.data.datamodule import RolloutDataModule

    dm = RolloutDataModule(cfg.env, cfg.algo, response_mode=str(cfg.model.response_mode), seed=0, pool_mode="sync")
    dm.setup("fit")
    try:
        torch.manual_seed(0)
        rollout, _ = dm.collect(module.policy, 0, module.algorithm.needs())
    finally:
        dm.teardown()
    return rollout


def test_first_minibatch_ratio_is_one_with_lora_dropout(compose_train_cfg: Compose) -> None:
    cfg = compose_train_cfg(["debug=smoke", "model.lora.dropout=0.1"])
    module = build(cfg)
    dropouts = [m for m in module.policy.modules() if isinstance(m, torch.nn.Dropout) and m.p > 0]
    assert dropouts, "the LoRA layers should carry dropout 0.1"
    rollout = rollout_of(module, cfg)
    targets = module.algorithm.targets(rollout)
    mb = next(rollout.minibatches(targets.advantages, targets.returns, rollout.num_steps, torch.Generator()))
    module.update_mode()  # what training_step does before its minibatches
    assert module.policy.training and not any(m.training for m in dropouts)

    def first_ratios() -> torch.Tensor:  # [real tokens] r = exp(log π_θ − log π_old)
        enc = module.policy.encode_steps(mb.steps)
        ids = torch.nn.utils.rnn.pad_sequence([r.response_ids for r in mb.steps], batch_first=True,
                                              padding_value=module.policy.pad_token_id)
        with torch.no_grad():
            logp, _ = module.policy.score(enc, ids, mb.response_mask[:, : ids.shape[1]], with_values=False)
        mask = mb.response_mask[:, : ids.shape[1]]
        return torch.exp(logp - mb.old_logprobs[:, : ids.shape[1]])[mask]

    torch.manual_seed(1)
    ratios = first_ratios()
    # Same network as the rollout: every ratio is 1 up to float noise (generate's cached decoding vs one
    # full forward), so nothing is clipped.
    torch.testing.assert_close(ratios, torch.ones_like(ratios), atol=1e-5, rtol=0)
    with torch.no_grad():
        _, stats = module.minibatch_loss(mb, policy_frozen=False)
    assert stats.clip_fraction.item() == 0.0
    # The check can fail: in plain train mode dropout perturbs the ratios of the very first minibatch.
    module.policy.train()
    torch.manual_seed(1)
    assert (first_ratios() - 1).abs().max() > 1e-3


@pytest.mark.parametrize("stop_grad", [True, False])
def test_value_stop_grad_switch_decides_whether_lora_learns_from_the_value_loss(
        compose_train_cfg: Compose, stop_grad: bool) -> None:
    cfg = compose_train_cfg(["debug=smoke", "algo=rl4vlm", f"algo.value_stop_grad={str(stop_grad).lower()}"])
    module = build(cfg)
    assert module.policy.value_head.stop_grad is stop_grad
    rollout = rollout_of(module, cfg)
    targets = module.algorithm.targets(rollout)
    mb = next(rollout.minibatches(targets.advantages, targets.returns, rollout.num_steps, torch.Generator()))
    module.update_mode()
    # Value warm-up (policy frozen): the loss is α·L_V alone.
    loss, _ = module.minibatch_loss(mb, policy_frozen=True)
    loss.backward()
    lora = {n: p for n, p in module.policy.model.named_parameters() if "lora_" in n}
    reached = [n for n, p in lora.items() if p.grad is not None and p.grad.any()]
    head = [p for p in module.policy.value_head.parameters()]
    assert all(p.grad is not None and p.grad.any() for p in head)
    if stop_grad:
        assert not reached, f"the value loss leaked into {reached[:3]}"
    else:
        assert len(reached) == len(lora), "with value_stop_grad=false the value loss trains every LoRA tensor"
