"""What this machine must offer the run that a valid config asks for, checked when a run starts.

:func:`~vldac_lightning.utils.config.validate_config` judges the config alone (a GPU recipe is valid
on the laptop that prepares it); these checks run in ``train`` and ``evaluate`` right after it, before
the MLflow run is created or a model loads, so a missing GPU or browser is one ``Config error`` line
instead of a traceback and an empty FAILED run.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from vldac_lightning.utils.config import ConfigError

__all__ = ["check_accelerator", "check_browser", "preflight"]


def check_accelerator(cfg: DictConfig) -> None:
    """``trainer.accelerator=gpu`` needs a usable CUDA GPU on this machine."""
    accelerator = str(OmegaConf.select(cfg, "trainer.accelerator") or "auto")
    if accelerator not in ("gpu", "cuda"):
        return
    import torch

    if not torch.cuda.is_available():
        why = "this torch is a CPU-only build" if torch.version.cuda is None else \
            "CUDA sees no device: check nvidia-smi and CUDA_VISIBLE_DEVICES"
        raise ConfigError(f"trainer.accelerator={accelerator} but no CUDA GPU is usable here ({why}): train on the CPU "
                          "with trainer=cpu (or trainer.accelerator=cpu), or see python -m vldac_lightning.doctor")


def check_browser(cfg: DictConfig) -> None:
    """WebShop needs a working Chromium (``env.env_kwargs.browser_executable``, ``$VLDAC_CHROMIUM`` or PATH)."""
    if not str(OmegaConf.select(cfg, "env.id") or "").startswith("webshop/"):
        return
    from vldac_lightning.envs.webshop.browser import chromium_problem

    problem = chromium_problem(OmegaConf.select(cfg, "env.env_kwargs.browser_executable"))
    if problem is not None:
        raise ConfigError(problem)


def preflight(cfg: DictConfig) -> None:
    """Every machine check a run needs (after ``validate_config``)."""
    check_accelerator(cfg)
    check_browser(cfg)
