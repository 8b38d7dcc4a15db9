"""Evaluate a checkpoint on held-out seeds: ``python -m vldac_lightning.evaluate ckpt_path=... env=...``.

Plays ``num_episodes`` episodes (one per evaluation seed, disjoint from every training seed) and
reports success rate, return, length and parse-failure rate — printed, written to
``<output_dir>/eval_metrics.json``, then logged to MLflow (a tracking failure is only a warning).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from vldac_lightning.utils.paths import CONF_DIR

log = logging.getLogger(__name__)


def load_trainable_state(module: Any, ckpt_path: str | Path) -> int:
    """Load LoRA + value-head weights from a Lightning checkpoint (``weights_only=True``).

    Returns the number of tensors loaded; raises if the checkpoint lacks a trainable weight
    (e.g. it was trained with a different model or LoRA config).
    """
    import torch

    ckpt = torch.load(str(ckpt_path), map_location="cpu", weights_only=True)
    state = ckpt.get("state_dict", ckpt)
    expected = {n for n, p in module.named_parameters() if p.requires_grad}
    missing = sorted(expected - set(state))
    if missing:
        raise ValueError(f"checkpoint {ckpt_path} lacks {len(missing)} trainable tensors (e.g. {missing[:3]}); "
                         "was it trained with the same model=/model.lora settings?")
    module.load_state_dict(state, strict=False)
    return len(state)


# Knobs of the env section that only shape training (batching, GAE): a difference is not a warning.
_TRAINING_ONLY = frozenset({"env.num_envs", "env.rollout_steps", "env.gamma", "env.gae_lambda"})
RESULTS_FILE = "eval_metrics.json"


def config_differences(ckpt_path: str | Path, current: dict[str, Any]) -> dict[str, list[Any]]:
    """``{key: [checkpoint value, current value]}`` for env and model keys that differ from the
    checkpoint's saved config (warned about: the numbers would describe another setting)."""
    from vldac_lightning.utils import resume
    from vldac_lightning.utils.logging_utils import flatten

    saved = resume.saved_config(ckpt_path)
    if saved is None:
        log.warning("%s carries no config (older version): cannot check it was trained on this env and model",
                    ckpt_path)
        return {}
    keys = resume.differing_keys(saved, current, sections=("env", "model"),
                                 ignore=resume.RESUMABLE_CHANGES | _TRAINING_ONLY)
    if keys:
        log.warning("Evaluating %s with an env or model that differs from the one it was trained with:\n%s\n"
                    "Pass the training run's env=/model overrides (its .hydra/overrides.yaml) to measure the trained "
                    "setting.", ckpt_path, resume.describe_differences(saved, current, keys))
    a, b = flatten(saved), flatten(current)
    return {k: [a.get(k), b.get(k)] for k in keys}


def same_env_and_model(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Keys that keep a checkpoint from being evaluated here: another env id or model (other env knobs
    only draw a warning, :func:`config_differences`)."""
    from vldac_lightning.utils import resume

    keys = resume.differing_keys(saved, current, sections=("model",), ignore=resume.RESUMABLE_CHANGES)
    if saved.get("env", {}).get("id") != current.get("env", {}).get("id"):
        keys.insert(0, "env.id")
    return keys


def write_results(cfg: DictConfig, metrics: dict[str, float], ckpt_path: str | None,
                  differences: dict[str, list[Any]], episodes_done: int | None = None,
                  stopped_by: str | None = None) -> Path:
    """Write the metrics (and what was evaluated) to ``<output_dir>/eval_metrics.json``; an evaluation
    stopped by a signal records ``stopped_by`` and how many episodes its partial metrics cover."""
    import json

    try:
        out_dir = Path(str(cfg.paths.output_dir))
    except Exception:  # ${hydra:...} is unset when evaluate(cfg) is called without Hydra
        out_dir = Path(str(cfg.paths.log_dir), "evaluate")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / RESULTS_FILE
    result = {
        "metrics": metrics, "ckpt_path": ckpt_path, "env": str(cfg.env.id), "num_episodes": int(cfg.num_episodes),
        "do_sample": bool(cfg.do_sample), "seed": int(cfg.seed), "differs_from_checkpoint": differences,
    }
    if stopped_by is not None:
        result.update(stopped_by=stopped_by, episodes_done=episodes_done, complete=False)
    path.write_text(json.dumps(result, indent=2, default=str))
    return path


def log_to_mlflow(cfg: DictConfig, metrics: dict[str, float], ckpt_path: str | None) -> list[Any]:
    """Log the results to the configured loggers; a failure is a warning (the results are already
    printed and on disk)."""
    from vldac_lightning.train import build_loggers
    from vldac_lightning.utils.logging_utils import log_hyperparameters

    loggers: list[Any] = []
    try:
        loggers = build_loggers(cfg)
        log_hyperparameters(cfg, loggers, {"evaluated_checkpoint": str(ckpt_path)})
        for logger in loggers:
            logger.log_metrics(metrics, step=0)
            logger.finalize("success")
    except Exception as exc:
        uri = (cfg.get("logger") or {}).get("mlflow", {}).get("tracking_uri")
        log.warning("The results were not logged to MLflow (%s: %s): they are in the file above. "
                    "Check the store (MLFLOW_TRACKING_URI) or pass logger=none.", uri or "logger", exc)
        return []
    return loggers


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Run the evaluation described by ``cfg`` (conf/evaluate.yaml) and return its metrics.

    The metrics are printed and written to a JSON file before MLflow is touched, so a tracking
    outage costs nothing but the MLflow record."""
    from vldac_lightning.utils.config import ConfigError, validate_config
    from vldac_lightning.utils.preflight import preflight

    validate_config(cfg)
    preflight(cfg)

    import lightning as L
    from omegaconf import OmegaConf

    from vldac_lightning.callbacks.evaluation import episode_metrics
    from vldac_lightning.data.datamodule import RolloutDataModule
    from vldac_lightning.models.module import ActorCriticModule
    from vldac_lightning.rollout.collector import run_episodes
    from vldac_lightning.utils import resume
    from vldac_lightning.utils.interrupt import RunInterrupted, StoppedBySignal, handle_signals
    from vldac_lightning.utils.mlflow_utils import print_run_locations

    current = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(current, dict)
    if cfg.get("torch_threads"):
        import torch

        torch.set_num_threads(int(cfg.torch_threads))
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path == "last":  # the newest checkpoint trained on this env and model, not any env's
        ckpt_path = resume.find_matching_last(cfg.paths.log_dir, current, differences=same_env_and_model,
                                              what="env.id and model")
        log.info("ckpt_path=last: evaluating %s", ckpt_path)
    if ckpt_path and not Path(str(ckpt_path)).is_file():
        raise ConfigError(f"ckpt_path={ckpt_path!r} is not a file; pass a checkpoint path (a run's "
                          "checkpoints/last.ckpt), ckpt_path=last, or leave it unset to evaluate the untrained policy")
    differences = config_differences(ckpt_path, current) if ckpt_path else {}
    L.seed_everything(int(cfg.seed), workers=True)
    dm = RolloutDataModule(cfg.env, cfg.algo, response_mode=str(cfg.model.response_mode), seed=int(cfg.seed),
                           pool_mode=str(cfg.env.pool_mode))
    module = ActorCriticModule(cfg.model, cfg.algo, cfg.optimizer, optimizer_steps_per_iteration=1, num_iterations=1)
    module.configure_model()
    if ckpt_path:
        n = load_trainable_state(module, ckpt_path)
        log.info("Loaded %d tensors from %s", n, ckpt_path)
    else:
        log.warning("No ckpt_path given: evaluating the untrained policy")
    episodes: list[Any] = []
    dm.setup("validate")
    with handle_signals() as stop:
        try:
            assert dm.eval_pool is not None
            policy = module.policy
            policy.set_action_names(dm.eval_pool.action_names)
            run_episodes(policy, dm.eval_pool, dm.eval_episode_seeds(int(cfg.num_episodes)),
                         do_sample=bool(cfg.do_sample), finished=episodes)
        except RunInterrupted:
            pass  # reported below, with the episodes that did finish
        finally:
            dm.teardown()
    metrics = episode_metrics(episodes)
    for k, v in metrics.items():
        print(f"{k}: {v:.4f}", flush=True)
    if stop.requested:
        import signal

        name = signal.Signals(int(stop.signum or signal.SIGTERM)).name
        path = write_results(cfg, metrics, ckpt_path, differences, episodes_done=len(episodes), stopped_by=name)
        print(f"Stopped by {name} after {len(episodes)} of {int(cfg.num_episodes)} episodes: partial results "
              f"(not logged to MLflow) in {path}. Run the same command again for the full evaluation.", flush=True)
        raise StoppedBySignal(stop.exit_code)
    print(f"Results: {write_results(cfg, metrics, ckpt_path, differences)}", flush=True)
    print_run_locations(log_to_mlflow(cfg, metrics, ckpt_path))
    return metrics


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="evaluate.yaml")
def main(cfg: DictConfig) -> float | None:
    from vldac_lightning.utils.config import exit_on_config_error, in_multirun

    with exit_on_config_error(keep_going=in_multirun()):
        return evaluate(cfg).get("eval/success_rate")


def cli() -> None:
    """Console entry point: friendly group-choice errors, then Hydra."""
    from vldac_lightning.utils.choices import run_cli
    from vldac_lightning.utils.interrupt import StoppedBySignal, exit_now

    try:
        run_cli(main)
    except StoppedBySignal as stop:  # partial results written and reported
        exit_now(int(stop.code))


if __name__ == "__main__":
    cli()
