"""Pretrain ``model=tiny_pretrained``: ``python -m vldac_lightning.pretrain [env=...] [key=value ...]``.

Supervised next-token training of the tiny VLM on data the simulators generate (docs/pretraining.md):
frames at random reachable states with their descriptions, and the env's real prompt answered in
the JSON format with a uniformly drawn legal action. A thin ``@hydra.main`` over ``pretrain(cfg)``;
Lightning runs the loop (checkpoints every ``train.checkpoint_every`` steps, ``ckpt_path=last``
resumes exactly), MLflow logs it through the ``logger`` group. The result is a folder that
``model=tiny_pretrained model.name_or_path=<folder>`` loads; without ``output_path`` it is the
cache folder ``model=tiny_pretrained`` looks in.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from vldac_lightning.utils.paths import CONF_DIR

log = logging.getLogger(__name__)


def _settings(cfg: DictConfig) -> DictConfig:
    """``model.tiny_pretrained``, with ``env=`` (if given) replacing the env list."""
    settings = cfg.model.tiny_pretrained
    env_id = OmegaConf.select(cfg, "env.id")
    if env_id:
        with open_dict(settings):
            settings.data.envs = [str(env_id)]
    return settings


def _check(settings: DictConfig) -> None:
    from vldac_lightning.envs.registry import ENV_REGISTRY
    from vldac_lightning.utils.config import ConfigError

    for env_id in settings.data.envs:
        if env_id not in ENV_REGISTRY:
            raise ConfigError(f"model.tiny_pretrained.data.envs has {env_id!r}, not a known env; valid ids: "
                              f"{list(ENV_REGISTRY)}")
    for key in ("steps", "batch_size", "checkpoint_every"):
        value = settings.train[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"model.tiny_pretrained.train.{key}={value!r} must be an integer >= 1")


def pretrain(cfg: DictConfig) -> tuple[dict[str, float], Path]:
    """Run (or resume) the pretraining; returns (the report's metrics, the output folder)."""
    settings = _settings(cfg)
    _check(settings)
    from vldac_lightning.models.pretrained_tiny import DONE_FILE, build_architecture, cache_path

    output = Path(str(cfg.output_path)).expanduser().resolve() if cfg.get("output_path") else cache_path(settings)
    ckpt_dir = output.with_name(output.name + "-checkpoints")
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path == "last":
        ckpt_path = str(ckpt_dir / "last.ckpt") if (ckpt_dir / "last.ckpt").is_file() else None
        if ckpt_path is None:
            log.info("ckpt_path=last: no checkpoint in %s yet, starting from step 0", ckpt_dir)

    import lightning as L
    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint

    from vldac_lightning.data.pretrain_datamodule import PretrainDataModule
    from vldac_lightning.models.loading import save_backbone
    from vldac_lightning.models.pretrain_module import PretrainModule, ProgressLog, evaluate_pretrained
    from vldac_lightning.train import build_loggers
    from vldac_lightning.utils.logging_utils import log_hyperparameters

    if cfg.get("torch_threads"):
        torch.set_num_threads(int(cfg.torch_threads))
    start = time.perf_counter()
    env_ids = [str(e) for e in settings.data.envs]
    seed = int(settings.seed)
    L.seed_everything(seed, workers=True)
    model, processor = build_architecture(settings.architecture, env_ids, seed)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("Pretraining a %.2f M-parameter tiny Qwen2-VL on %s for %d steps", n_params / 1e6, env_ids,
             settings.train.steps)
    train = settings.train
    module = PretrainModule(model, lr=float(train.lr), min_lr=float(train.min_lr), warmup_steps=int(train.warmup_steps),
                            weight_decay=float(train.weight_decay), max_steps=int(train.steps))
    datamodule = PretrainDataModule(processor, env_ids=env_ids, seed=seed, batch_size=int(train.batch_size),
                                    max_random_steps=int(settings.data.max_random_steps),
                                    describe_fraction=float(settings.data.describe_fraction))
    loggers = build_loggers(cfg)
    checkpoint = ModelCheckpoint(dirpath=str(ckpt_dir), every_n_train_steps=int(train.checkpoint_every),
                                 save_last=True, save_top_k=-1, filename="step{step}", auto_insert_metric_name=False)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=int(train.steps), logger=loggers or False,
                        callbacks=[checkpoint, ProgressLog()], log_every_n_steps=10, enable_model_summary=False,
                        enable_progress_bar=True, default_root_dir=str(ckpt_dir))
    log_hyperparameters(cfg, loggers, {"derived.parameters": n_params, "derived.output_path": str(output)})
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=False)
    train_s = time.perf_counter() - start

    metrics = evaluate_pretrained(model, processor, env_ids, seed=seed, num_per_env=int(settings.eval.num_per_env))
    for logger in loggers:
        logger.log_metrics({f"pretrain_eval/{k}": v for k, v in metrics.items()}, step=int(trainer.global_step))
    output.mkdir(parents=True, exist_ok=True)
    save_backbone(model, processor, output)
    report: dict[str, Any] = {
        "metrics": metrics, "parameters": n_params, "steps": int(trainer.global_step),
        "wall_s_this_process": round(time.perf_counter() - start, 1), "train_wall_s_this_process": round(train_s, 1),
        "torch_threads": torch.get_num_threads(), "resumed_from": ckpt_path,
        "settings": OmegaConf.to_container(settings, resolve=True),
    }
    (output / DONE_FILE).write_text(json.dumps(report, indent=2))  # last: marks the folder complete
    for k, v in sorted(metrics.items()):
        log.info("held-out %s = %.3f", k, v)
    log.info("Pretrained model written to %s (%.2f M parameters, %.0f s)", output, n_params / 1e6,
             report["wall_s_this_process"])
    return metrics, output


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="pretrain.yaml")
def main(cfg: DictConfig) -> None:
    from vldac_lightning.utils.config import exit_on_config_error

    with exit_on_config_error():
        pretrain(cfg)


if __name__ == "__main__":
    main()
