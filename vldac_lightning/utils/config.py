"""One place that validates and derives config values, before anything heavy is built.

Every error names the key, the bad value and what to change (TRL style), and runs before any
model is loaded or simulator started.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

MODEL_SOURCES = ("tiny", "pretrained")
RESPONSE_MODES = ("json", "action_only")
PARSE_FAILURE = ("random", "penalty")


class ConfigError(ValueError):
    """A configuration value is missing, of the wrong type, or out of range."""


def _get(cfg: DictConfig, key: str) -> Any:
    absent = object()
    value = OmegaConf.select(cfg, key, default=absent)
    if value is absent or value == "???":
        raise ConfigError(f"config key '{key}' is missing; add it to the config or pass {key}=...")
    return value


def _number(cfg: DictConfig, key: str, *, integer: bool = False, lo: float | None = None, hi: float | None = None,
            lo_open: bool = False) -> float:
    value = _get(cfg, key)
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind):
        want = "an integer" if integer else "a number"
        raise ConfigError(f"{key}={value!r} must be {want}")
    if lo is not None and (value <= lo if lo_open else value < lo):
        raise ConfigError(f"{key}={value} must be {'>' if lo_open else '>='} {lo}")
    if hi is not None and value > hi:
        raise ConfigError(f"{key}={value} must be <= {hi}")
    return value


def _choice(cfg: DictConfig, key: str, choices: tuple[str, ...]) -> str:
    value = _get(cfg, key)
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is not one of {list(choices)}")
    return value


def validate_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` on the first invalid value (types, ranges, divisibility)."""
    from vldac_lightning.envs import registry

    env_id = _get(cfg, "env.id")
    if env_id not in registry.ENV_IDS:
        raise ConfigError(f"env.id={env_id!r} is not a known environment; valid ids: {list(registry.ENV_IDS)}")
    hint = registry.missing_requirement(env_id)
    if hint is not None:
        raise ConfigError(hint)
    _number(cfg, "env.image_history", integer=True, lo=1)
    _number(cfg, "env.max_episode_steps", integer=True, lo=1)
    _number(cfg, "env.num_envs", integer=True, lo=1)
    _number(cfg, "env.eval_num_envs", integer=True, lo=1)
    _choice(cfg, "env.parse_failure", PARSE_FAILURE)
    _choice(cfg, "env.pool_mode", ("async", "sync"))
    _number(cfg, "env.gamma", lo=0, hi=1)
    _number(cfg, "env.gae_lambda", lo=0, hi=1)
    # Self-healing pool knobs (optional; EnvPool's defaults apply when absent; null = no timeout).
    for key in ("env.step_timeout_s", "env.reset_timeout_s"):
        if OmegaConf.select(cfg, key) is not None:
            _number(cfg, key, lo=0, lo_open=True)
    if OmegaConf.select(cfg, "env.max_restarts") is not None:
        _number(cfg, "env.max_restarts", integer=True, lo=0)

    # The chosen algorithm (algo._target_) validates the shared PPO keys and its own.
    from vldac_lightning.algo.base import algorithm_class

    algorithm_class(_get(cfg, "algo")).validate(cfg)

    _number(cfg, "optimizer.lr", lo=0, lo_open=True)
    _number(cfg, "optimizer.min_lr", lo=0)
    _number(cfg, "optimizer.eps", lo=0, lo_open=True)
    _number(cfg, "optimizer.weight_decay", lo=0)

    source = _choice(cfg, "model.source", MODEL_SOURCES)
    if source == "pretrained" and not cfg.model.get("name_or_path"):
        raise ConfigError("model.name_or_path is required when model.source=pretrained (a hub id or local path)")
    _choice(cfg, "model.dtype", ("float32", "bfloat16", "float16"))
    _choice(cfg, "model.response_mode", RESPONSE_MODES)
    _number(cfg, "model.lora.r", integer=True, lo=1)
    _number(cfg, "model.lora.alpha", lo=0, lo_open=True)
    _number(cfg, "model.lora.dropout", lo=0, hi=1)
    _number(cfg, "model.sampling.temperature", lo=0, lo_open=True)
    _number(cfg, "model.sampling.top_k", integer=True, lo=0)
    _number(cfg, "model.sampling.top_p", lo=0, lo_open=True, hi=1)
    _number(cfg, "model.sampling.max_new_tokens", integer=True, lo=1)
