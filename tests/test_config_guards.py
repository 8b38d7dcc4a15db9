"""Overrides are never silently ignored, and bad values fail fast with the key named (no model loads)."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from vldac_lightning.utils.choices import normalize_group_overrides
from vldac_lightning.utils.config import ConfigError, check_known_keys, validate_config


def test_a_typo_added_with_plus_is_rejected_with_the_near_match(compose_train_cfg) -> None:
    cfg = compose_train_cfg(["+algo.kl_bata=0.1"])  # what Hydra's own error message suggests
    with pytest.raises(ConfigError, match=r"algo\.kl_bata \(did you mean algo\.kl_beta\?\)"):
        check_known_keys(cfg)


def test_keys_forwarded_as_arguments_are_accepted_or_checked(compose_train_cfg) -> None:
    check_known_keys(compose_train_cfg(["+env.env_kwargs.whatever=1", "+trainer.gradient_clip_val=1.0"]))
    with pytest.raises(ConfigError, match=r"trainer\.gradient_clip_vale"):
        check_known_keys(compose_train_cfg(["+trainer.gradient_clip_vale=1.0"]))


def test_every_shipped_config_defines_only_known_keys(compose_train_cfg) -> None:
    conf = ROOT / "conf"
    for experiment in sorted(p.stem for p in (conf / "experiment").glob("*.yaml")):
        check_known_keys(compose_train_cfg([f"experiment={experiment}"]))
    check_known_keys(compose_train_cfg(["debug=smoke", "logger=none"]))


def test_nested_group_choice_in_slash_form_is_read_as_the_group_choice() -> None:
    argv, notes = normalize_group_overrides(["+env/gym_cards=blackjack", "env/miniworld=oneroom,hallway", "seed=1"])
    assert argv == ["env=gym_cards/blackjack", "env=miniworld/oneroom,miniworld/hallway", "seed=1"]
    assert len(notes) == 2 and "env=gym_cards/blackjack" in notes[0]


@pytest.mark.parametrize(("override", "message"), [
    ("trainer.max_epochs=3", r"trainer\.max_epochs=3 has no effect.*algo\.total_env_steps"),
    ("+trainer.max_steps=10", r"trainer\.max_steps=10 is not used"),
    ("seed=abc", r"seed='abc' must be an integer"),
    ("torch_threads=-1", r"torch_threads=-1 must be >= 1"),
    ("optimizer.lr=nan", r"optimizer\.lr=nan must be a finite number"),  # NaN passes every range check
    ("optimizer.lr=inf", r"optimizer\.lr=inf must be a finite number"),
    ("algo.kl_beta=-inf", r"algo\.kl_beta=-inf must be a finite number"),
    ("trainer.devices=2", r"trainer\.devices=2 .*starts several training processes.*trainer=ddp trainer\.devices=2"),
    ("callbacks.evaluation.every_n_iterations=0", r"callbacks\.evaluation\.every_n_iterations=0 must be >= 1"),
    ("callbacks.evaluation.num_episodes=0", r"callbacks\.evaluation\.num_episodes=0 must be >= 1"),
    ("run_name=" + "x" * 4097, r"run_name is 4097 characters long; MLflow keeps at most 250"),
])
def test_settings_that_would_do_nothing_or_crash_later_are_rejected(compose_train_cfg, override: str,
                                                                     message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_config(compose_train_cfg([override]))


def test_evaluate_refuses_a_number_of_episodes_below_one(compose_train_cfg) -> None:
    for n in (0, -3):
        with pytest.raises(ConfigError, match=rf"num_episodes={n} must be >= 1"):
            validate_config(compose_train_cfg([f"num_episodes={n}"], config_name="evaluate.yaml"))


def test_a_gpu_accelerator_without_a_gpu_is_refused_when_the_run_starts(compose_train_cfg, monkeypatch) -> None:
    import torch

    from vldac_lightning.utils.preflight import check_accelerator

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = compose_train_cfg(["trainer=gpu"])
    validate_config(cfg)  # a GPU config is valid where it is prepared
    with pytest.raises(ConfigError, match=r"trainer\.accelerator=gpu but no CUDA GPU is usable here.*trainer=cpu"):
        check_accelerator(cfg)
    check_accelerator(compose_train_cfg(["trainer=cpu"]))


def test_a_budget_that_is_not_a_whole_number_of_rollouts_is_announced(compose_train_cfg, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        validate_config(compose_train_cfg(["algo.total_env_steps=50000"]))
    assert "algo.total_env_steps=50000 is not a multiple of algo.rollout_steps=256: the run trains 195 " \
           "iterations = 49920 env steps" in caplog.text


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", "vldac_lightning.train", *args, "logger=none"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def test_command_line_errors_are_one_message_and_exit_2() -> None:
    done = _cli("seed=abc")
    assert done.returncode == 2
    assert done.stderr.strip() == "Config error: seed='abc' must be an integer"


def test_a_sweep_config_without_multirun_is_refused() -> None:
    done = _cli("hparams_search=kl_beta")
    assert done.returncode == 2 and "add -m" in done.stderr


def test_unreachable_hub_fails_in_seconds_with_the_offline_recipe(tmp_path: Path) -> None:
    start = time.monotonic()
    done = _cli("model=qwen2_vl_2b", env={"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_CACHE": str(tmp_path)})
    assert done.returncode == 2, done.stderr[-2000:]
    assert "model.local_files_only=true" in done.stderr and "model.name_or_path=" in done.stderr
    assert time.monotonic() - start < 60  # was ~60 s of retries and a 136-line trace


def test_local_weights_folder_must_hold_a_checkpoint(tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    from vldac_lightning.models.availability import check_pretrained_available

    with pytest.raises(ConfigError, match="has no config.json"):
        check_pretrained_available(OmegaConf.create({"name_or_path": str(tmp_path), "local_files_only": True}))
    (tmp_path / "config.json").write_text("{}")
    assert check_pretrained_available(OmegaConf.create({"name_or_path": str(tmp_path), "local_files_only": False}))


def test_max_new_tokens_beyond_the_models_context_is_refused(compose_train_cfg) -> None:
    from vldac_lightning.models.module import ActorCriticModule

    cfg = compose_train_cfg(["model.sampling.max_new_tokens=5000"])  # the tiny model's context: 4096
    module = ActorCriticModule(cfg.model, cfg.algo, cfg.optimizer, optimizer_steps_per_iteration=1, num_iterations=1)
    with pytest.raises(ConfigError, match=r"model\.sampling\.max_new_tokens=5000 does not fit this model's context "
                                          r"of 4096 tokens"):
        module.configure_model()
