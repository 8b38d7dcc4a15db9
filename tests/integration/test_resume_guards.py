"""A resume is checked against the checkpoint's own config before anything is loaded or logged."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import compose_config, reset_hydra
from vldac_lightning.utils.config import ConfigError
from vldac_lightning.utils.resume import differing_keys, find_matching_last

COMMON = ["debug=smoke", "env.max_episode_steps=3", "callbacks.evaluation.num_episodes=2"]


def test_differing_keys_lists_identity_keys_only() -> None:
    saved = {"env": {"id": "A", "pool_mode": "sync"}, "model": {"lora": {"r": 16}}, "algo": {"total_env_steps": 16},
             "seed": 0}
    now = {"env": {"id": "B", "pool_mode": "async"}, "model": {"lora": {"r": 8}}, "algo": {"total_env_steps": 32},
           "seed": 1}
    # pool_mode and the budget may change on resume; seed is outside env/model/algo.
    assert differing_keys(saved, now) == ["env.id", "model.lora.r"]
    # A checkpoint from before env.ray existed resumes onto a Ray cluster.
    ray = {"pool_mode": "ray", "ray": {"address": "auto", "num_cpus_per_env": 0.5, "num_cpus": None}}
    assert differing_keys(saved, {**now, "env": {"id": "A", **ray}}) == ["model.lora.r"]


def test_ckpt_path_last_takes_the_newest_matching_checkpoint(tmp_path: Path) -> None:
    def write(name: str, env_id: str, mtime: float) -> Path:
        path = tmp_path / "train" / "runs" / name / "checkpoints" / "last.ckpt"
        path.parent.mkdir(parents=True)
        torch.save({"vldac_config": {"env": {"id": env_id}, "model": {}, "algo": {}}}, path)
        os.utime(path, (mtime, mtime))
        return path

    now = time.time()
    older = write("a", "gym_cards/NumberLine-v0", now - 100)
    write("b", "gym_cards/EZPoints-v0", now)  # newer, but another env
    current = {"env": {"id": "gym_cards/NumberLine-v0"}, "model": {}, "algo": {}}
    assert find_matching_last(tmp_path, current) == str(older)
    with pytest.raises(ConfigError, match=r"env\.id: 'gym_cards/EZPoints-v0' \(checkpoint\) -> 'x' \(now\)"):
        find_matching_last(tmp_path, {"env": {"id": "x"}, "model": {}, "algo": {}})


@pytest.mark.slow
def test_bad_resumes_are_refused_and_the_finished_run_is_untouched(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    from vldac_lightning.models import module as module_mod
    from vldac_lightning.train import train

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    try:
        _, first = train(compose_config(COMMON, log_dir=tmp_path / "logs",
                                        output_dir=tmp_path / "logs" / "train" / "runs" / "first"))
    finally:
        reset_hydra()
    k = first["datamodule"].optimizer_steps_per_iteration
    mid = tmp_path / "logs" / "train" / "runs" / "first" / "checkpoints" / f"step{k}.ckpt"
    client = mlflow.MlflowClient(tracking_uri=uri)
    run_id = first["loggers"][0].run_id
    history = len(client.get_metric_history(run_id, "eval/success_rate"))

    loads: list[int] = []
    original = module_mod.load_backbone
    monkeypatch.setattr(module_mod, "load_backbone", lambda cfg: (loads.append(1), original(cfg))[1])

    def refused(overrides: list[str], match: str) -> None:
        try:
            cfg = compose_config([*COMMON, *overrides], log_dir=tmp_path / "logs", output_dir=tmp_path / "again")
            with pytest.raises(ConfigError, match=match):
                train(cfg)
        finally:
            reset_hydra()

    # 1. Another env: refused with the differing key, before any model is built.
    refused(["env=gym_cards/ezpoints", f"ckpt_path={mid}"],
            r"(?s)different env.*\n  env\.id: 'gym_cards/NumberLine-v0' \(checkpoint\) -> 'gym_cards/EZPoints-v0' \(now\)")
    refused(["env=gym_cards/ezpoints", "ckpt_path=last"], r"(?s)none of the 1 last\.ckpt .* was trained with this env")
    assert loads == []
    # 2. The finished run's own last checkpoint: nothing left to train.
    refused(["ckpt_path=last"], r"(?s)has finished all 2 iterations.*nothing left to train")
    assert loads == []
    # 3. A model that does not fit (forced past the config check): refused before MLflow is touched.
    refused(["model.tiny.hidden_size=64", "model.tiny.intermediate_size=128", "resume_strict=false",
             f"ckpt_path={mid}"], r"does not fit this model")

    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert len(client.get_metric_history(run_id, "eval/success_rate")) == history
    assert len(client.search_runs([run.info.experiment_id])) == 1
