"""NaN/Inf losses and gradients: the update is skipped and logged; N in a row stop the run with
the last checkpoint intact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from tests.conftest import compose_config, reset_hydra

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("fault", ["nan_loss", "nan_grad"])
def test_non_finite_updates_are_skipped_then_stop_the_run(fault: str, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    from vldac_lightning.algo import vldac as vldac_mod
    from vldac_lightning.models import module as module_mod
    from vldac_lightning.train import train

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    real_loss = vldac_mod.vldac_loss
    seen: dict[str, Any] = {}

    def faulty_loss(logprobs, *args: Any, **kwargs: Any):  # type: ignore[no-untyped-def]
        loss, stats = real_loss(logprobs, *args, **kwargs)
        values = args[4]  # (old_logprobs, ref_logprobs, mask, advantages, values, returns)
        if seen.setdefault("calls", 0) >= 4:  # iteration 0's 4 minibatches train normally
            if "params" not in seen:
                seen["params"] = {n: p.detach().clone() for n, p in seen["module"].named_parameters()
                                  if p.requires_grad}
            if fault == "nan_loss":
                loss = loss * float("nan")
            else:  # finite loss, NaN gradient: d sqrt(z)/dz at 0 is inf, times dz/dV = 0
                loss = loss + torch.sqrt(values.sum() * 0.0)
        seen["calls"] += 1
        return loss, stats

    original_configure = module_mod.ActorCriticModule.configure_model

    def configure_model(self):  # type: ignore[no-untyped-def]
        seen["module"] = self
        original_configure(self)

    monkeypatch.setattr(vldac_mod, "vldac_loss", faulty_loss)  # the loss VL-DAC's algorithm object calls
    monkeypatch.setattr(module_mod.ActorCriticModule, "configure_model", configure_model)
    cfg = compose_config(["debug=smoke", "env.max_episode_steps=3", "algo.max_bad_updates=2",
                          "algo.total_env_steps=32"], log_dir=tmp_path / "logs", output_dir=tmp_path / "out")
    try:
        with pytest.raises(FloatingPointError, match="2 updates in a row had a NaN/Inf"):
            train(cfg)
    finally:
        reset_hydra()
    # Nothing non-finite reached the weights: they are exactly those before the first bad update.
    for name, param in seen["module"].named_parameters():
        if param.requires_grad:
            assert torch.equal(param.detach(), seen["params"][name]), name
    # The checkpoint of iteration 0 (2 optimizer steps) is the last one, intact and finite.
    last = torch.load(tmp_path / "out" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 2
    assert all(torch.isfinite(t).all() for t in last["state_dict"].values())
    client = mlflow.MlflowClient(tracking_uri=uri)
    run = client.search_runs([client.get_experiment_by_name("vldac_lightning").experiment_id])[0]
    skipped = [m.value for m in client.get_metric_history(run.info.run_id, "train/skipped_updates_in_row")]
    assert skipped == [1.0, 2.0]



def test_weights_that_overflow_stop_the_run_and_are_never_checkpointed(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """What optimizer.lr=inf did (a finite gradient times a huge rate): from the third optimizer step on,
    Adam's update makes a weight Inf. The run stops at once (FAILED, naming optimizer.lr); the checkpoint
    of iteration 0 (2 optimizer steps) is the last one written, and it is finite."""
    import mlflow

    from vldac_lightning.train import train

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    real_step = torch.optim.Adam.step
    steps = {"n": 0}

    def overflowing_step(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[no-untyped-def]
        out = real_step(self, *args, **kwargs)
        steps["n"] += 1
        if steps["n"] >= 3:
            with torch.no_grad():
                self.param_groups[0]["params"][-1].fill_(float("inf"))
        return out

    monkeypatch.setattr(torch.optim.Adam, "step", overflowing_step)
    cfg = compose_config(["debug=smoke", "env.max_episode_steps=3", "algo.total_env_steps=32"],
                         log_dir=tmp_path / "logs", output_dir=tmp_path / "out")
    try:
        with pytest.raises(FloatingPointError, match=r"optimizer step 3 made trainable weights NaN/Inf \(optimizer.lr="):
            train(cfg)
    finally:
        reset_hydra()
    ckpts = sorted((tmp_path / "out" / "checkpoints").glob("*.ckpt"))
    assert ckpts
    for ckpt in ckpts:
        saved = torch.load(ckpt, map_location="cpu", weights_only=True)
        assert saved["global_step"] == 2, ckpt
        assert all(torch.isfinite(t).all() for t in saved["state_dict"].values() if t.is_floating_point()), ckpt
    client = mlflow.MlflowClient(tracking_uri=uri)
    run = client.search_runs([client.get_experiment_by_name("vldac_lightning").experiment_id])[0]
    assert run.info.status == "FAILED"


def test_a_second_ctrl_c_while_stopping_still_closes_the_mlflow_run(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Ctrl-C, then Ctrl-C again while the stop checkpoint is being written: the second one cut Lightning's
    shutdown short and left the MLflow run RUNNING."""
    import os
    import signal

    import mlflow

    from vldac_lightning.callbacks.interrupt import InterruptCheckpoint
    from vldac_lightning.train import train
    from vldac_lightning.utils.interrupt import StoppedBySignal, stop_request

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    real_step, steps = torch.optim.Adam.step, {"n": 0}

    def step(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[no-untyped-def]
        steps["n"] += 1
        if steps["n"] == 4:  # the first Ctrl-C, at the end of iteration 1 (iteration 0's checkpoint exists)
            stop_request.request(signal.SIGINT)
        return real_step(self, *args, **kwargs)

    real_on_exception = InterruptCheckpoint.on_exception

    def impatient(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[no-untyped-def]
        os.kill(os.getpid(), signal.SIGINT)  # the second Ctrl-C, while the stop checkpoint is being written
        real_on_exception(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    monkeypatch.setattr(InterruptCheckpoint, "on_exception", impatient)
    cfg = compose_config(["debug=smoke", "env.max_episode_steps=3", "algo.total_env_steps=32"],
                         log_dir=tmp_path / "logs", output_dir=tmp_path / "out")
    previous = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(StoppedBySignal) as stopped:
            train(cfg)
    finally:
        signal.signal(signal.SIGINT, previous)
        reset_hydra()
    assert stopped.value.code == 128 + signal.SIGINT
    client = mlflow.MlflowClient(tracking_uri=uri)
    run = client.search_runs([client.get_experiment_by_name("vldac_lightning").experiment_id])[0]
    assert run.info.status == "KILLED"
    out = capsys.readouterr().out
    assert "Stopped by SIGINT at optimizer step 4 (a second Ctrl-C cut the stop short)." in out
    assert "Resume with: python -m vldac_lightning.train" in out and "step2.ckpt" not in out  # its last.ckpt
