"""Resume: a run restarted from a mid-run checkpoint continues at the right iteration and step."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import compose_config, reset_hydra

pytestmark = pytest.mark.slow


def test_resume_from_checkpoint_continues_the_schedule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vldac_lightning.train import train

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    common = ["debug=smoke", "env.max_episode_steps=3", "callbacks.evaluation.num_episodes=2"]
    cfg = compose_config(common, log_dir=tmp_path / "logs", output_dir=tmp_path / "first")
    try:
        _, first = train(cfg)
    finally:
        reset_hydra()
    k = first["datamodule"].optimizer_steps_per_iteration
    ckpts = sorted((tmp_path / "first" / "checkpoints").glob("step*.ckpt"))
    assert [p.name for p in ckpts] == [f"step{k}.ckpt", f"step{2 * k}.ckpt"]  # one per iteration
    state = torch.load(ckpts[0], map_location="cpu", weights_only=True)  # loads without pickle
    assert state["global_step"] == k
    assert "optimizer_states" in state and "lr_schedulers" in state

    # Resume after iteration 0 with a longer budget (3 iterations): iterations 1 and 2 run.
    cfg = compose_config([*common, "algo.total_env_steps=24", f"ckpt_path={ckpts[0]}"],
                         log_dir=tmp_path / "logs", output_dir=tmp_path / "second")
    try:
        _, second = train(cfg)
    finally:
        reset_hydra()
    assert second["trainer"].global_step == 3 * k
    assert second["module"].iteration == 2
    # The resumed run starts from the checkpoint's weights, not from a fresh adapter.
    resumed_keys = [n for n, p in second["module"].named_parameters() if p.requires_grad]
    assert set(resumed_keys) == set(state["state_dict"])
