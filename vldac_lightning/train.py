"""Train a VLM with VL-DAC: ``python -m vldac_lightning.train [env=...] [model=...] [key=value ...]``.

A thin ``@hydra.main`` over a plain ``train(cfg)`` that tests call directly. Order inside:
validate → seed → datamodule → module → callbacks → loggers → trainer → fit. Heavy imports stay
inside ``train`` so ``--help`` and config errors come back fast.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import hydra
from omegaconf import DictConfig

from vldac_lightning.utils.paths import CONF_DIR

log = logging.getLogger(__name__)


def build_loggers(cfg: DictConfig, run_id: str | None = None) -> list[Any]:
    """The ``logger`` group's loggers; ``run_id`` reopens that MLflow run (exact resume). An MLflow
    run without ``run_name`` is named from the job's overrides (``default_run_name``); a multirun
    job's new run is nested under the sweep's parent run (``job_logger_tags``)."""
    from vldac_lightning.utils.mlflow_sweep import job_logger_tags
    from vldac_lightning.utils.mlflow_utils import artifact_location, default_run_name

    loggers = []
    for _name, logger_cfg in (cfg.get("logger") or {}).items():
        if logger_cfg is not None and "_target_" in logger_cfg:
            log.info("Instantiating logger <%s>", logger_cfg._target_)
            extra: dict[str, Any] = {}
            if str(logger_cfg._target_).endswith("MLFlowLogger"):
                extra["artifact_location"] = artifact_location(logger_cfg)
                if run_id:
                    extra["run_id"] = run_id
                elif logger_cfg.get("run_name") is None:
                    extra["run_name"] = default_run_name(cfg)
                if not run_id and (tags := job_logger_tags(cfg)):
                    extra["tags"] = tags
            loggers.append(hydra.utils.instantiate(logger_cfg, **extra))
    return loggers


def build_callbacks(cfg: DictConfig, steps_per_iteration: int) -> list[Any]:
    from lightning.pytorch.callbacks import ModelCheckpoint

    from vldac_lightning.callbacks import InterruptCheckpoint, PeriodicEvaluation, RolloutSamples

    cb = cfg.callbacks
    every = int(cb.model_checkpoint.every_n_iterations) * steps_per_iteration
    return [
        InterruptCheckpoint(),  # first: its on_train_start must run before the initial evaluation
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
    from vldac_lightning.utils.preflight import preflight

    validate_config(cfg)  # before any model is loaded or simulator started
    preflight(cfg)  # the GPU or browser the config asks for
    from vldac_lightning.utils.mlflow_utils import check_tracking_store

    check_tracking_store(cfg)  # an unusable MLflow store fails here, in seconds
    if cfg.model.source == "pretrained":
        from vldac_lightning.models.availability import check_pretrained_available

        check_pretrained_available(cfg.model)  # seconds, not a minute of download retries

    from contextlib import nullcontext

    from omegaconf import OmegaConf

    from vldac_lightning.utils.resume import find_matching_last
    from vldac_lightning.utils.run_folder import claim_run_folder, first_process

    current = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(current, dict)
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path == "last":
        ckpt_path = find_matching_last(cfg.paths.log_dir, current)
    # Rank 0 claims the run folder; the ranks a DDP launcher starts later share it.
    guard = claim_run_folder(cfg.paths.output_dir, cfg.callbacks.model_checkpoint.dirpath,
                             str(ckpt_path) if ckpt_path else None) if first_process() else nullcontext()
    with guard:
        return _train_in_folder(cfg, current, str(ckpt_path) if ckpt_path else None)


def _train_in_folder(cfg: DictConfig, current: dict[str, Any],
                     ckpt_path: str | None) -> tuple[dict[str, float], dict[str, Any]]:
    """:func:`train` once the run folder is this run's alone: build, resume, fit, report."""
    import lightning as L
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from vldac_lightning.callbacks import InterruptCheckpoint, PeriodicEvaluation
    from vldac_lightning.data.datamodule import RolloutDataModule
    from vldac_lightning.models.module import ActorCriticModule
    from vldac_lightning.utils.checkpoint_io import AtomicCheckpointIO
    from vldac_lightning.utils.interrupt import RunInterrupted, StoppedBySignal, handle_signals
    from vldac_lightning.utils.logging_utils import log_hyperparameters
    from vldac_lightning.utils.mlflow_utils import print_run_locations
    from vldac_lightning.utils.resume import check_resume, check_trainable_shapes

    # Our checkpoints are taken between iterations, where no update is half-done: Lightning's warning
    # about manual optimisation and step-based checkpoints (with a page of example code) does not apply.
    warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")
    if cfg.get("torch_threads"):
        import torch

        torch.set_num_threads(int(cfg.torch_threads))
    L.seed_everything(int(cfg.seed), workers=True)
    datamodule = RolloutDataModule(cfg.env, cfg.algo, response_mode=str(cfg.model.response_mode),
                                   seed=int(cfg.seed), pool_mode=str(cfg.env.pool_mode))
    k = datamodule.optimizer_steps_per_iteration
    module = ActorCriticModule(cfg.model, cfg.algo, cfg.optimizer, optimizer_steps_per_iteration=k,
                               num_iterations=datamodule.num_iterations)
    module.run_config = current
    callbacks = build_callbacks(cfg, k)

    # Resume: check the checkpoint against this config before the model loads or MLflow is touched.
    run_id = previous_run = None
    if ckpt_path:
        resume = check_resume(ckpt_path, current, optimizer_steps_per_iteration=k,
                              num_iterations=datamodule.num_iterations, strict=bool(cfg.get("resume_strict", True)))
        module.configure_model()
        check_trainable_shapes(module, ckpt_path)
        log.info("Resuming from %s (optimizer step %d)", ckpt_path, resume.global_step)
        run_id = resume.mlflow_run_id
        if run_id is not None and _mlflow_run_status(cfg, run_id) == "FINISHED":
            # A finished run's record stays as it was: continue in a new run that points back to it.
            log.warning("The checkpoint's MLflow run %s has FINISHED; this resume logs to a new run "
                        "(tagged resumed_from_run=%s)", run_id, run_id)
            previous_run, run_id = run_id, None
    loggers = build_loggers(cfg, run_id=run_id)
    log.info("Instantiating trainer <%s>", cfg.trainer._target_)
    trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                                      plugins=[AtomicCheckpointIO()])
    if run_id is None:
        log_hyperparameters(cfg, loggers, {"derived.iterations": datamodule.num_iterations,
                                           "derived.optimizer_steps_per_iteration": k})
    tags = {"resumed_from": str(ckpt_path)} if ckpt_path else {}
    if previous_run is not None:
        tags["resumed_from_run"] = previous_run
    for logger in loggers:  # a resumed run's params are immutable: only note the resume
        # MLflow loggers only (run_id), on rank 0 (other ranks get a dummy experiment, run_id None).
        if tags and getattr(logger, "run_id", None) is not None and hasattr(logger.experiment, "set_tag"):
            for key, value in tags.items():
                logger.experiment.set_tag(logger.run_id, key, value)

    with handle_signals() as stop:
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        except (RunInterrupted, SIGTERMException):
            # Under DDP a rank that got no signal still has stop.requested: sync_stop_request set it.
            if not stop.requested:
                raise
            interrupt = next(c for c in callbacks if isinstance(c, InterruptCheckpoint))
            if trainer.is_global_zero:
                _report_stop(trainer, loggers, interrupt.saved_path, stop.signum)
            raise StoppedBySignal(stop.exit_code) from None
        except KeyboardInterrupt:
            # A second Ctrl-C while stopping (handle_signals lets it through at once): whatever Lightning
            # was doing (the stop checkpoint, closing the MLflow run) is cut short; still close the run.
            if not stop.requested:
                raise
            interrupt = next(c for c in callbacks if isinstance(c, InterruptCheckpoint))
            if trainer.is_global_zero:
                _report_stop(trainer, loggers, interrupt.saved_path, stop.signum, forced=True)
            raise StoppedBySignal(stop.exit_code) from None

    evaluation = next(c for c in callbacks if isinstance(c, PeriodicEvaluation))
    metrics = dict(evaluation.history[-1][1]) if evaluation.history else {}
    if evaluation.history:
        metrics["eval/initial_success_rate"] = evaluation.history[0][1].get("eval/success_rate", float("nan"))
    ckpt_cb = trainer.checkpoint_callback
    if trainer.is_global_zero:
        print_run_locations(loggers, checkpoint_dir=ckpt_cb.dirpath if ckpt_cb is not None else None,
                            last_checkpoint=ckpt_cb.last_model_path if ckpt_cb is not None else None)
    objects = {"cfg": cfg, "datamodule": datamodule, "module": module, "trainer": trainer,
               "callbacks": callbacks, "loggers": loggers, "evaluation": evaluation}
    return metrics, objects


def _mlflow_run_status(cfg: DictConfig, run_id: str) -> str | None:
    """The status of the checkpoint's MLflow run (None without an MLflow logger or when unknown)."""
    mlflow_cfg = (cfg.get("logger") or {}).get("mlflow")
    if mlflow_cfg is None:
        return None
    try:
        from mlflow import MlflowClient

        return str(MlflowClient(tracking_uri=str(mlflow_cfg.tracking_uri)).get_run(run_id).info.status)
    except Exception as exc:  # a deleted run or another store: the resume logs to a new run
        log.warning("Could not read MLflow run %s (%s)", run_id, exc)
        return None


def hydra_quoted(value: str) -> str:
    """``value`` as a Hydra override value that parses back to exactly ``value`` (quoted when it holds
    spaces, quotes, ``,`` or other grammar characters; ``${`` is escaped so it is not interpolated)."""
    import re

    if re.fullmatch(r"[\w./+@-]+", value):
        return value
    return "'" + value.replace("\\'", "\\\\'").replace("'", "\\'").replace("${", "\\${") + "'"


def resume_command(ckpt: str, overrides: list[str] | None = None) -> str:
    """The shell command that resumes this job from ``ckpt``: the job's own overrides (``ckpt_path``
    replaced), each quoted for the shell, so pasting it works whatever the paths and names hold."""
    import shlex

    if overrides is None:
        overrides = []
        try:
            from hydra.core.hydra_config import HydraConfig

            overrides = list(HydraConfig.get().overrides.task)
        except ValueError:  # HydraConfig is not set when train(cfg) is called directly
            pass
    kept = [o for o in overrides if not o.lstrip("+~").startswith("ckpt_path=")]
    return " ".join(["python -m vldac_lightning.train", *map(shlex.quote, kept),
                     shlex.quote(f"ckpt_path={hydra_quoted(ckpt)}")])


def _report_stop(trainer: Any, loggers: list[Any], saved: str | None, signum: int | None, forced: bool = False) -> None:
    """After a stop signal: mark the MLflow run KILLED and tell the user how to resume (``forced``: a
    second Ctrl-C cut the stop short, maybe before its checkpoint was written)."""
    import signal
    from pathlib import Path

    if forced:  # a third Ctrl-C must not cut this short too: it takes a second
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    for logger in loggers:
        experiment, run_id = getattr(logger, "experiment", None), getattr(logger, "run_id", None)
        if run_id is not None and hasattr(experiment, "set_terminated"):
            try:
                experiment.set_terminated(run_id, "KILLED")  # Lightning marked it FAILED
            except Exception as exc:  # a logging failure must not hide the resume command
                log.warning("Could not mark MLflow run %s KILLED: %s", run_id, exc)
    last = saved
    ckpt_cb = trainer.checkpoint_callback
    if last is None and ckpt_cb is not None and ckpt_cb.last_model_path:  # this run's own, never a neighbour's
        last = ckpt_cb.last_model_path if Path(ckpt_cb.last_model_path).exists() else None
    name = signal.Signals(signum).name if signum else "a signal"
    lines = [f"Stopped by {name} at optimizer step {trainer.global_step}"
             + (" (a second Ctrl-C cut the stop short)." if forced else ".")]
    if last is None:
        lines.append("No checkpoint was written yet: a new run starts from scratch.")
    else:
        lines.append(f"Checkpoint: {last}" + ("" if saved else " (the last periodic one; later updates are lost)"))
        lines.append(f"Resume with: {resume_command(last)}")
    print("\n".join(lines), flush=True)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train.yaml")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns the sweep metric (``optimized_metric``): a finite float, or None
    (with an error logged) when the run did not produce it."""
    from vldac_lightning.utils.config import exit_on_config_error, in_multirun
    from vldac_lightning.utils.interrupt import StoppedBySignal
    from vldac_lightning.utils.sweep_records import objective

    try:
        with exit_on_config_error(keep_going=in_multirun()):
            metrics, _ = train(cfg)
    except StoppedBySignal as stop:  # a SystemExit: Hydra's launcher never sees this job end
        from vldac_lightning.utils.mlflow_sweep import record_stopped_job

        record_stopped_job(int(stop.code))
        raise
    name = cfg.get("optimized_metric")
    return objective(metrics, str(name)) if name else None


def cli() -> None:
    """Console entry point: friendly group-choice errors, then Hydra."""
    from vldac_lightning.utils.choices import run_cli
    from vldac_lightning.utils.interrupt import StoppedBySignal, exit_now

    try:
        run_cli(main)
    except StoppedBySignal as stop:  # all saved and reported: leave without the slow teardown
        from vldac_lightning.utils.mlflow_sweep import finish_stopped_sweeps

        finish_stopped_sweeps(int(stop.code))  # a sweep's parent run and job table (atexit will not run)
        exit_now(int(stop.code))


if __name__ == "__main__":
    cli()
