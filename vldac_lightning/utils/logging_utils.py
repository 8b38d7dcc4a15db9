"""Rank-zero side effects at the edges: hyperparameters, the resolved config, checkpoint lookup."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def log_hyperparameters(cfg: DictConfig, loggers: list[Any], extra: dict[str, Any] | None = None) -> None:
    """Log every resolved config value as a param and the whole config as an artifact."""
    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)
    params = flatten({k: v for k, v in container.items() if k not in ("logger", "hydra")})
    params.update(extra or {})
    for logger in loggers:
        logger.log_hyperparams({k: str(v)[:500] for k, v in params.items()})
        experiment, run_id = getattr(logger, "experiment", None), getattr(logger, "run_id", None)
        if run_id is not None and hasattr(experiment, "log_text"):
            experiment.log_text(run_id, OmegaConf.to_yaml(cfg, resolve=True), "config/config.yaml")


def find_last_checkpoint(log_dir: str | Path, task_name: str = "train") -> str:
    """The newest ``last.ckpt`` under ``log_dir/<task_name>`` (for ``ckpt_path=last``)."""
    candidates = sorted(Path(log_dir, task_name).glob("**/checkpoints/last*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise FileNotFoundError(f"ckpt_path=last but no last.ckpt exists under {Path(log_dir, task_name)}; "
                                "pass an explicit ckpt_path=... or start without one")
    return str(candidates[-1])
