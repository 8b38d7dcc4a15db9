"""Rank-zero side effects at the edges: hyperparameters, the resolved config, checkpoint lookup, and
one handler per log line."""

from __future__ import annotations

import logging
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

# Loggers that Lightning gives a console handler of its own when imported.
_LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric")


def route_lightning_logs_to_root() -> None:
    """Remove Lightning's own console handlers when the root logger has handlers (Hydra's job logging).

    ``import lightning`` always attaches a ``StreamHandler`` to the ``lightning`` logger, which also
    propagates to the root: every Lightning message was printed twice (``INFO: ...`` and Hydra's
    format) and written to the run's log file once. Afterwards each message goes through the root
    handlers only: once on the console, once in the log file.
    """
    import lightning  # noqa: F401 (its import is what adds the handlers)

    if not logging.getLogger().handlers:
        return  # nothing else would print Lightning's messages
    for name in _LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if type(handler) is logging.StreamHandler:  # Lightning's console handler, not a file handler
                logger.removeHandler(handler)
        logger.propagate = True


class LogOnce(Callback):
    """Hydra callback (conf/hydra/default.yaml): runs after Hydra configured job logging."""

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        route_lightning_logs_to_root()


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

