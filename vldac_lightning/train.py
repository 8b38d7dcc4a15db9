"""Train a VLM with VL-DAC: ``python -m vldac_lightning.train [env=...] [model=...] [key=value ...]``.

A thin ``@hydra.main`` over a plain ``train(cfg)`` that tests call directly. Order inside:
validate → seed → datamodule → module → callbacks → loggers → trainer → fit. Heavy imports stay
inside ``train`` so ``--help`` and config errors come back fast.
"""

from __future__ import annotations

import logging
from typing import Any

import hydra
from omegaconf import DictConfig

log = logging.getLogger(__name__)


def build_loggers(cfg: DictConfig, run_id: str | None = None) -> list[Any]:
    """The ``logger`` group's loggers; ``run_id`` reopens that MLflow run (exact resume)."""
    loggers = []
    for _name, logger_cfg in (cfg.get("logger") or {}).items():
        if logger_cfg is not None and "_target_" in logger_cfg:
            log.info("Instantiating logger <%s>", logger_cfg._target_)
            extra = {"run_id": run_id} if run_id and str(logger_cfg._target_).endswith("MLFlowLogger") else {}
            loggers.append(hydra.utils.instantiate(logger_cfg, **extra))
    return loggers


def build_callbacks(cfg: DictConfig, steps_per_iteration: int) -> list[Any]:
    from lightning.pytorch.callbacks import ModelCheckpoint

    from vldac_lightning.callbacks import PeriodicEvaluation, RolloutSamples

    cb = cfg.callbacks
    every = int(cb.model_checkpoint.every_n_iterations) * steps_per_iteration
    return [
        # Evaluation before checkpointing, so a checkpoint's iteration has been evaluated.
        PeriodicEvaluation(int(cb.evaluation.every_n_iterations), int(cb.evaluation.num_episodes),
                           bool(cb.evaluation.do_sample)),
        RolloutSamples(int(cb.samples.every_n_iterations)),
        ModelCheckpoint(dirpath=cb.model_checkpoint.dirpath, every_n_train_steps=every,
                        save_last=bool(cb.model_checkpoint.save_last), save_top_k=-1,
                        filename="step{step}", auto_insert_metric_name=False),
    ]


def train(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """Run one training job; returns (final metrics, the objects built)."""
    from vldac_lightning.utils.config import validate_config

    validate_config(cfg)  # before any model is loaded or simulator started

    import lightning as L

    from vldac_lightning.data.datamodule import RolloutDataModule
    from vldac_lightning.models.module import ActorCriticModule
    from vldac_lightning.utils.checkpoint_io import AtomicCheckpointIO, load_checkpoint
    from vldac_lightning.utils.logging_utils import find_last_checkpoint, log_hyperparameters

    if cfg.get("torch_threads"):
        import torch

        torch.set_num_threads(int(cfg.torch_threads))
    L.seed_everything(int(cfg.seed), workers=True)
    datamodule = RolloutDataModule(cfg.env, cfg.algo, response_mode=str(cfg.model.response_mode),
                                   seed=int(cfg.seed), pool_mode=str(cfg.env.pool_mode))
    k = datamodule.optimizer_steps_per_iteration
    module = ActorCriticModule(cfg.model, cfg.algo, cfg.optimizer, optimizer_steps_per_iteration=k,
                               num_iterations=datamodule.num_iterations)
    callbacks = build_callbacks(cfg, k)
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path == "last":
        ckpt_path = find_last_checkpoint(cfg.paths.log_dir)
    run_id = None
    if ckpt_path:
        log.info("Resuming from %s", ckpt_path)
        run_id = load_checkpoint(ckpt_path).get("mlflow_run_id")
    loggers = build_loggers(cfg, run_id=run_id)
    log.info("Instantiating trainer <%s>", cfg.trainer._target_)
    trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                                      plugins=[AtomicCheckpointIO()])
    if run_id is None:
        log_hyperparameters(cfg, loggers, {"derived.iterations": datamodule.num_iterations,
                                           "derived.optimizer_steps_per_iteration": k})
    else:
        # The same MLflow run continues; its params are immutable, so only note the resume.
        for logger in loggers:
            if hasattr(logger, "experiment") and hasattr(logger.experiment, "set_tag"):
                logger.experiment.set_tag(logger.run_id, "resumed_from", str(ckpt_path))
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)

    from vldac_lightning.callbacks import PeriodicEvaluation

    evaluation = next(c for c in callbacks if isinstance(c, PeriodicEvaluation))
    metrics = dict(evaluation.history[-1][1]) if evaluation.history else {}
    if evaluation.history:
        metrics["eval/initial_success_rate"] = evaluation.history[0][1].get("eval/success_rate", float("nan"))
    objects = {"cfg": cfg, "datamodule": datamodule, "module": module, "trainer": trainer,
               "callbacks": callbacks, "loggers": loggers, "evaluation": evaluation}
    return metrics, objects


@hydra.main(version_base="1.3", config_path="../conf", config_name="train.yaml")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns the sweep metric (``optimized_metric``)."""
    metrics, _ = train(cfg)
    name = cfg.get("optimized_metric")
    return metrics.get(name) if name else None


def cli() -> None:
    """Console entry point: friendly group-choice errors, then Hydra."""
    from vldac_lightning.utils.choices import run_cli

    run_cli(main)


if __name__ == "__main__":
    cli()
