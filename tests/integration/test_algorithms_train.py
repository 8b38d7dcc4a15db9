"""Every algorithm trains end to end on the tiny model (debug=smoke); a grouped run resumes exactly;
and the five algorithms run as one Hydra multirun."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.conftest import ROOT, compose_config, reset_hydra

pytestmark = pytest.mark.slow

SMOKE = ["debug=smoke", "env.max_episode_steps=3", "logger=none", "callbacks.evaluation.num_episodes=2"]


def run(tmp_path: Path, overrides: list[str], name: str) -> dict[str, Any]:
    from vldac_lightning.train import train

    cfg = compose_config([*SMOKE, *overrides], log_dir=tmp_path / "logs", output_dir=tmp_path / name)
    try:
        _, objects = train(cfg)
    finally:
        reset_hydra()
    return objects


@pytest.mark.parametrize("algo", ["rl4vlm", "loop", "grpo", "gigpo"])
def test_each_algorithm_trains(tmp_path: Path, algo: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from vldac_lightning.models.module import ActorCriticModule

    before: dict[str, torch.Tensor] = {}
    original = ActorCriticModule.configure_model

    def configure_model(self: ActorCriticModule) -> None:
        first = self.policy is None
        original(self)
        if first:
            before.update({n: p.detach().clone() for n, p in self.named_parameters() if p.requires_grad})

    monkeypatch.setattr(ActorCriticModule, "configure_model", configure_model)
    objects = run(tmp_path, [f"algo={algo}"], algo)
    module, trainer = objects["module"], objects["trainer"]
    # 2 iterations × 2 epochs × (8 steps / minibatches of 4) / 2 accumulation = 4 optimizer steps.
    assert trainer.global_step == 4
    after = dict(module.named_parameters())
    lora_moved = [n for n in before if "lora_" in n and not torch.equal(after[n].detach(), before[n])]
    head_moved = [n for n in before if "value_head" in n and not torch.equal(after[n].detach(), before[n])]
    assert lora_moved, f"{algo}: the policy never changed"
    if algo == "rl4vlm":
        assert head_moved
    else:
        assert not head_moved, f"{algo} has no critic, yet the value head changed: {head_moved[:2]}"
    # Whole-episode rollouts end on whole rounds; the overshoot comes off the next budget, so after two
    # 8-step iterations a run has used 16 env steps plus less than one round (2 copies × 3 steps).
    steps = module.env_steps
    assert (16 <= steps < 16 + 2 * 3) if algo != "rl4vlm" else steps == 16


def test_a_grouped_run_resumes_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """GRPO, 3 iterations; resumed from the checkpoint after iteration 0 it collects the same rounds
    (same tasks, sampled tokens, log-probs) and ends at the same weights and env-step count."""
    from vldac_lightning.models.module import ActorCriticModule

    seen: dict[int, dict[str, Any]] = {}
    original = ActorCriticModule.record_rollout

    def record(self, iteration, rollout, stats, advantages, returns):  # type: ignore[no-untyped-def]
        seen[iteration] = {"rewards": rollout.rewards.clone(), "old_logprobs": rollout.old_logprobs.clone(),
                           "advantages": advantages.clone(), "prompts": [s.obs["text"] for s in rollout.steps]}
        return original(self, iteration, rollout, stats, advantages, returns)

    monkeypatch.setattr(ActorCriticModule, "record_rollout", record)
    common = ["algo=grpo", "algo.total_env_steps=24"]
    full = run(tmp_path, common, "full")
    uninterrupted = dict(seen)
    seen.clear()
    k = full["datamodule"].optimizer_steps_per_iteration
    ckpt = tmp_path / "full" / "checkpoints" / f"step{k}.ckpt"
    resumed = run(tmp_path, [*common, f"ckpt_path={ckpt}"], "resumed")
    assert sorted(seen) == [1, 2]
    for it in (1, 2):
        assert uninterrupted[it]["prompts"] == seen[it]["prompts"]
        for key in ("rewards", "old_logprobs", "advantages"):
            assert torch.equal(uninterrupted[it][key], seen[it][key]), f"iteration {it}: {key} differs"
    assert resumed["module"].env_steps == full["module"].env_steps
    final = dict(full["module"].named_parameters())
    for name, p in resumed["module"].named_parameters():
        if p.requires_grad:
            assert torch.equal(p, final[name]), name


def test_the_five_algorithms_run_as_one_multirun(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, "-m", "vldac_lightning.train", "-m", "algo=vldac,rl4vlm,loop,grpo,gigpo", *SMOKE,
         f"paths.log_dir={tmp_path / 'logs'}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    ckpts = sorted((tmp_path / "logs").glob("**/checkpoints/last.ckpt"))
    assert len(ckpts) == 5, ckpts
