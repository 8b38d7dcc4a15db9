"""evaluate: a missing or wrong-env checkpoint is named before any model loads, and a stop signal
keeps the episodes already played (docs/troubleshooting.md "Evaluating")."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from vldac_lightning.utils.config import ConfigError
from vldac_lightning.utils.interrupt import StoppedBySignal


def _fake_last(log_dir: Path, run: str, env_id: str, age_s: float, cfg: Any = None) -> Path:
    """A last.ckpt that holds only its config: ``cfg``'s (resolved) with ``env.id`` replaced."""
    from omegaconf import OmegaConf

    path = log_dir / "train" / "runs" / run / "checkpoints" / "last.ckpt"
    path.parent.mkdir(parents=True)
    config = OmegaConf.to_container(cfg, resolve=True) if cfg is not None else {"env": {}, "model": {}, "algo": {}}
    config["env"]["id"] = env_id
    torch.save({"vldac_config": config}, path)
    os.utime(path, (time.time() - age_s,) * 2)
    return path


def test_a_missing_checkpoint_is_a_config_error(compose_train_cfg: Any) -> None:
    from vldac_lightning.evaluate import evaluate

    cfg = compose_train_cfg(["debug=smoke", "ckpt_path=/no/such/last.ckpt"], config_name="evaluate.yaml")
    with pytest.raises(ConfigError, match=r"ckpt_path='/no/such/last.ckpt' is not a file"):
        evaluate(cfg)


def test_ckpt_path_last_takes_the_newest_checkpoint_of_this_env(compose_train_cfg: Any, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import vldac_lightning.evaluate as evaluate_mod

    cfg = compose_train_cfg(["debug=smoke", "ckpt_path=last"], config_name="evaluate.yaml")
    numberline = _fake_last(tmp_path / "logs", "a", str(cfg.env.id), age_s=100, cfg=cfg)
    _fake_last(tmp_path / "logs", "b", "gym_cards/Blackjack-v0", age_s=0, cfg=cfg)  # newer, another env
    picked: list[str] = []

    class Picked(Exception):
        pass

    def stop_here(path: Any, current: Any) -> Any:
        picked.append(str(path))
        raise Picked

    monkeypatch.setattr(evaluate_mod, "config_differences", stop_here)
    with pytest.raises(Picked):
        evaluate_mod.evaluate(cfg)
    assert picked == [str(numberline)]


def test_ckpt_path_last_names_a_truncated_checkpoint_and_the_intact_one_beside_it(tmp_path: Path) -> None:
    from vldac_lightning.utils.resume import find_matching_last

    last = _fake_last(tmp_path, "a", "x", age_s=0)
    intact = last.parent / "step8.ckpt"
    torch.save({"vldac_config": {"env": {"id": "x"}, "model": {}, "algo": {}}}, intact)
    os.utime(intact, (time.time() - 50,) * 2)
    last.write_bytes(last.read_bytes()[:100])  # a copy cut short / a full disk
    with pytest.raises(ConfigError, match=rf"checkpoint {last} cannot be read: it is truncated.*"
                                          rf"newest intact checkpoint beside it is {intact}: pass ckpt_path={intact}"):
        find_matching_last(tmp_path, {"env": {"id": "x"}, "model": {}, "algo": {}})


def test_sigterm_during_evaluate_keeps_the_finished_episodes(compose_train_cfg: Any, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from vldac_lightning.evaluate import RESULTS_FILE, evaluate
    from vldac_lightning.models.policy import VLMPolicy

    real_act, calls = VLMPolicy.act, {"n": 0}

    def act_then_terminate(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 5:  # the first batch of 2 episodes (3 steps each) has ended
            os.kill(os.getpid(), signal.SIGTERM)
        return real_act(self, *args, **kwargs)

    monkeypatch.setattr(VLMPolicy, "act", act_then_terminate)
    cfg = compose_train_cfg(["debug=smoke", "num_episodes=6", "env.max_episode_steps=3"], config_name="evaluate.yaml")
    with pytest.raises(StoppedBySignal) as stopped:
        evaluate(cfg)
    assert stopped.value.code == 128 + signal.SIGTERM
    saved = json.loads((Path(cfg.paths.output_dir) / RESULTS_FILE).read_text())
    assert saved["stopped_by"] == "SIGTERM" and saved["complete"] is False
    assert 2 <= saved["episodes_done"] < 6 and saved["metrics"]["eval/episodes"] == saved["episodes_done"]
    out = capsys.readouterr().out
    assert f"Stopped by SIGTERM after {saved['episodes_done']} of 6 episodes: partial results" in out
