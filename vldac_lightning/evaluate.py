"""Evaluate a checkpoint on held-out seeds: ``python -m vldac_lightning.evaluate ckpt_path=... env=...``.

Plays ``num_episodes`` episodes (one per evaluation seed, disjoint from every training seed) and
reports success rate, return, length and parse-failure rate — printed, and logged to MLflow.
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


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Run the evaluation described by ``cfg`` (conf/evaluate.yaml) and return its metrics."""
    from vldac_lightning.utils.config import validate_config

    validate_config(cfg)

    import lightning as L

    from vldac_lightning.callbacks.evaluation import episode_metrics
    from vldac_lightning.data.datamodule import RolloutDataModule
    from vldac_lightning.models.module import ActorCriticModule
    from vldac_lightning.rollout.collector import run_episodes
    from vldac_lightning.train import build_loggers
    from vldac_lightning.utils.logging_utils import find_last_checkpoint, log_hyperparameters

    if cfg.get("torch_threads"):
        import torch

        torch.set_num_threads(int(cfg.torch_threads))
    L.seed_everything(int(cfg.seed), workers=True)
    dm = RolloutDataModule(cfg.env, cfg.algo, response_mode=str(cfg.model.response_mode), seed=int(cfg.seed),
                           pool_mode=str(cfg.env.pool_mode))
    module = ActorCriticModule(cfg.model, cfg.algo, cfg.optimizer, optimizer_steps_per_iteration=1, num_iterations=1)
    module.configure_model()
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path == "last":
        ckpt_path = find_last_checkpoint(cfg.paths.log_dir)
    if ckpt_path:
        n = load_trainable_state(module, ckpt_path)
        log.info("Loaded %d tensors from %s", n, ckpt_path)
    else:
        log.warning("No ckpt_path given: evaluating the untrained policy")
    dm.setup("validate")
    try:
        assert dm.eval_pool is not None
        policy = module.policy
        policy.set_action_names(dm.eval_pool.action_names)
        episodes = run_episodes(policy, dm.eval_pool, dm.eval_episode_seeds(int(cfg.num_episodes)),
                                do_sample=bool(cfg.do_sample))
    finally:
        dm.teardown()
    metrics = episode_metrics(episodes)
    loggers = build_loggers(cfg)
    log_hyperparameters(cfg, loggers, {"evaluated_checkpoint": str(ckpt_path)})
    for logger in loggers:
        logger.log_metrics(metrics, step=0)
        logger.finalize("success")
    for k, v in metrics.items():
        print(f"{k}: {v:.4f}")
    return metrics


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="evaluate.yaml")
def main(cfg: DictConfig) -> float | None:
    return evaluate(cfg).get("eval/success_rate")


def cli() -> None:
    """Console entry point: friendly group-choice errors, then Hydra."""
    from vldac_lightning.utils.choices import run_cli

    run_cli(main)


if __name__ == "__main__":
    cli()
