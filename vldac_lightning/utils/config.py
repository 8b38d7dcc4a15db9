"""One place that validates and derives config values, before anything heavy is built.

Every error names the key, the bad value and what to change (TRL style), and runs before any
model is loaded or simulator started.
"""

from __future__ import annotations

import difflib
import errno
import logging
import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

MODEL_SOURCES = ("tiny", "tiny_pretrained", "pretrained")
RESPONSE_MODES = ("json", "action_only")
PARSE_FAILURE = ("random", "penalty")


class ConfigError(ValueError):
    """A configuration value is missing, of the wrong type, or out of range."""


# Errors writing a run's files that the user fixes by freeing space or choosing another folder.
_WRITE_ERRNOS = {errno.ENOSPC: "no space left on the disk", errno.EDQUOT: "disk quota exceeded",
                 errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
                 errno.EPERM: "operation not permitted", errno.ENAMETOOLONG: "file name too long",
                 errno.ENOTDIR: "a part of the path is a file, not a folder"}


def write_error_message(exc: OSError) -> str | None:
    """One line for an error writing the run's files (disk full, read-only, too long), or None."""
    reason = _WRITE_ERRNOS.get(exc.errno or -1)
    if reason is None:
        return None
    where = f" {exc.filename}" if exc.filename else ""
    return (f"cannot write{where}: {reason}. Free space there, or write elsewhere with paths.log_dir=/a/writable/folder "
            "(or VLDAC_ROOT); checkpoints written before are intact (docs/troubleshooting.md#files-and-disks)")


@contextmanager
def exit_on_config_error(keep_going: bool = False) -> Iterator[None]:
    """In a command-line entry point: a :class:`ConfigError` (or an error writing the run's files) is the
    user's to fix, so print its message alone (no traceback) and exit with status 2 (1 for a write error).

    ``keep_going``: in a multirun job the message is printed and the error raised on, so the launcher
    records this job as failed and runs the others (an exit would end the whole sweep)."""
    try:
        yield
    except ConfigError as exc:
        print(f"Config error: {exc}", file=sys.stderr, flush=True)
        if keep_going:
            raise
        raise SystemExit(2) from None
    except OSError as exc:
        message = write_error_message(exc)
        if message is None:
            raise
        print(f"Error: {message}", file=sys.stderr, flush=True)
        if keep_going:
            raise
        raise SystemExit(1) from None


def in_multirun() -> bool:
    """Running as one job of a Hydra multirun (``-m``)?"""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return bool(HydraConfig.get().mode == RunMode.MULTIRUN)
    except (ImportError, ValueError):  # not under Hydra
        return False


def _get(cfg: DictConfig, key: str) -> Any:
    absent = object()
    value = OmegaConf.select(cfg, key, default=absent)
    if value is absent or value == "???":
        raise ConfigError(f"config key '{key}' is missing; add it to the config or pass {key}=...")
    return value


def _number(cfg: DictConfig, key: str, *, integer: bool = False, lo: float | None = None, hi: float | None = None,
            lo_open: bool = False, allow_inf: bool = False) -> float:
    value = _get(cfg, key)
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind):
        want = "an integer" if integer else "a number"
        raise ConfigError(f"{key}={value!r} must be {want}")
    # NaN passes every comparison below, and an infinite rate or coefficient turns the weights into
    # NaN/Inf a step later: both are refused here, before anything is built.
    if math.isnan(value) or (math.isinf(value) and not allow_inf):
        raise ConfigError(f"{key}={value} must be a finite number")
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


# Config nodes whose keys are passed on as keyword arguments, so no YAML file lists them all.
OPEN_SECTIONS = ("env.env_kwargs", "logger", "hydra")


def _conf_dir() -> Path:
    from vldac_lightning.utils.paths import CONF_DIR

    return CONF_DIR


@lru_cache(maxsize=4)
def defined_keys(conf_dir: Path | None = None) -> frozenset[str]:
    """Every dotted key some file under ``conf/`` defines (files of group ``g/…`` define ``g.*``;
    ``# @package _global_`` files define keys from the root)."""
    root = conf_dir or _conf_dir()
    keys: set[str] = set()
    for path in root.rglob("*.yaml"):
        rel = path.relative_to(root)
        text = path.read_text()
        first = text.split("\n", 1)[0]
        if "@package _global_" in first or len(rel.parts) == 1:
            package = ""
        elif "@package " in first:  # an explicit package, e.g. model.engine for conf/model/engine/
            package = first.split("@package ", 1)[1].strip()
        else:
            package = rel.parts[0]
        node = OmegaConf.load(path)
        container = OmegaConf.to_container(node, resolve=False) if node is not None else {}
        if isinstance(container, dict):
            container.pop("defaults", None)
            keys.update(_dotted(container, package))
            if package:
                keys.add(package)
    return frozenset(keys)


def _dotted(d: dict[str, Any], prefix: str) -> set[str]:
    out: set[str] = set()
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        out.add(key)
        if isinstance(v, dict):
            out |= _dotted(v, key)
    return out


def _trainer_arguments() -> set[str]:
    import inspect

    import lightning

    return set(inspect.signature(lightning.Trainer.__init__).parameters) - {"self"}


def check_known_keys(cfg: DictConfig, conf_dir: Path | None = None) -> None:
    """Reject keys no config file defines (``+algo.kl_bata=0.1`` would otherwise be ignored silently),
    listing the nearest defined keys. ``trainer.*`` is checked against ``lightning.Trainer``'s arguments."""
    known = defined_keys(conf_dir)
    container = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(container, dict)
    unknown = []
    for key in sorted(_dotted(container, "")):
        if key in known or any(key == s or key.startswith(s + ".") for s in OPEN_SECTIONS):
            continue
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        if parent in unknown or any(key.startswith(u + ".") for u in unknown):
            continue  # report a whole unknown subtree once
        if parent == "trainer" and "_target_" in (cfg.get("trainer") or {}):
            if key.split(".", 1)[1] in _trainer_arguments():
                continue
        unknown.append(key)
    if unknown:
        lines = []
        for key in unknown:
            near = difflib.get_close_matches(key, sorted(known), n=3, cutoff=0.75)
            lines.append(f"  {key}" + (f" (did you mean {', '.join(near)}?)" if near else ""))
        raise ConfigError("these config keys are not defined by any config file, so nothing would read them:\n"
                          + "\n".join(lines) + "\nFix the spelling (no '+' is needed for a key that exists), or "
                          "see docs/config.md#overrides.")


def check_run_mode(cfg: DictConfig) -> None:
    """A sweep config chosen without ``-m`` would silently run its first point only."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
    except (ImportError, ValueError):  # not under Hydra (tests compose configs directly)
        return
    search = hc.runtime.choices.get("hparams_search")
    if search not in (None, "null") and hc.mode == RunMode.RUN:
        raise ConfigError(f"hparams_search={search} defines a sweep, but this is a single run: add -m "
                          f"(python -m vldac_lightning.train -m hparams_search={search} ...)")


def check_world(cfg: DictConfig) -> None:
    """Under DDP/FSDP the global sizes are split over ``trainer.devices × trainer.num_nodes`` ranks:
    each must divide evenly (and each rank's envs into whole task groups)."""
    from vldac_lightning.utils.distributed import split_problem, world_size_from_trainer

    trainer = cfg.get("trainer")
    if trainer is None:
        return
    _check_devices(trainer)
    problem = split_problem(num_envs=int(_get(cfg, "env.num_envs")), rollout_steps=int(_get(cfg, "algo.rollout_steps")),
                            minibatch_size=int(_get(cfg, "algo.minibatch_size")),
                            grad_accum_steps=int(_get(cfg, "algo.grad_accum_steps")),
                            group_size=int(OmegaConf.select(cfg, "env.group_size") or 1),
                            ranks=world_size_from_trainer(trainer))
    if problem is not None:
        raise ConfigError(problem)


def _check_devices(trainer: DictConfig) -> None:
    """Several devices need a strategy that starts one process per device (Lightning finds out later,
    after the model loaded, in a traceback)."""
    from vldac_lightning.utils.distributed import world_size_from_trainer

    devices = trainer.get("devices", 1)
    listed = len(devices) if OmegaConf.is_list(devices) else None
    count = listed if listed is not None else (int(devices) if str(devices).lstrip("-").isdigit() else 1)
    if (count > 1 or int(trainer.get("num_nodes", 1) or 1) > 1) and world_size_from_trainer(trainer) == 1:
        raise ConfigError(f"trainer.devices={devices} (num_nodes={trainer.get('num_nodes', 1)}) starts several training "
                          "processes, which needs a strategy that shares the rollout between them: add trainer=ddp "
                          f"(python -m vldac_lightning.train trainer=ddp trainer.devices={devices}), or trainer=fsdp "
                          "for models that do not fit one GPU (docs/config.md#several-gpus-or-nodes-lightning-ddp--fsdp)")


def _check_ray_version() -> None:
    """Ray older than 2.52 has no token authentication: its ports (every interface) accept anyone."""
    from importlib.metadata import PackageNotFoundError, version

    from vldac_lightning.envs.ray_worker import MIN_RAY_VERSION

    try:
        installed = version("ray")
    except PackageNotFoundError:  # found by find_spec but not installed as a distribution: cannot tell
        return
    parts = tuple(int(p) for p in installed.split(".")[:2] if p.isdigit())
    if parts < MIN_RAY_VERSION:
        floor = ".".join(map(str, MIN_RAY_VERSION))
        raise ConfigError(f"env.pool_mode=ray: Ray {installed} has no token authentication (Ray >= {floor}), so anyone "
                          f"who reaches this machine's Ray ports could run code: pip install 'ray>={floor},<3' (or "
                          "pip install 'vldac_lightning[ray]')")


def _check_ray(cfg: DictConfig) -> None:
    """``env.pool_mode=ray``: Ray is installed, ``env.ray`` is valid, and a local Ray can place every env actor."""
    import importlib.util
    import os

    from vldac_lightning.envs.ray_worker import RAY_MISSING, RayOptions, address_problem

    if importlib.util.find_spec("ray") is None:
        raise ConfigError(RAY_MISSING)
    _check_ray_version()
    address = OmegaConf.select(cfg, "env.ray.address")
    if address is not None and not isinstance(address, str):
        raise ConfigError(f"env.ray.address={address!r} must be a Ray address (\"auto\", \"ray://host:10001\") or null")
    per_env = _number(cfg, "env.ray.num_cpus_per_env", lo=0)
    if OmegaConf.select(cfg, "env.ray.num_cpus") is not None:
        _number(cfg, "env.ray.num_cpus", integer=True, lo=1)
    options = RayOptions.from_mapping(OmegaConf.to_container(cfg.env.ray, resolve=True))  # type: ignore[arg-type]
    cluster = options.cluster_address()
    if cluster is not None and (problem := address_problem(cluster)) is not None:
        source = "env.ray.address" if options.address else "$RAY_ADDRESS"
        raise ConfigError(f"env.pool_mode=ray: the Ray cluster {source}={cluster!r} is not reachable: {problem}. "
                          "Start it there (`ray start --head` on that machine), correct the address, or set "
                          "env.ray.address=null and unset RAY_ADDRESS to start a local Ray (docs/environments.md#pool-modes)")
    if cluster is None:
        # A local Ray never grows: actors it cannot place would wait until env.reset_timeout_s.
        actors = int(cfg.env.num_envs) + int(cfg.env.eval_num_envs)  # the train and eval pools run together
        cpus = options.num_cpus or os.cpu_count() or 1
        if actors * per_env > cpus:
            raise ConfigError(
                f"env.pool_mode=ray on a local Ray: {actors} env actors (env.num_envs + env.eval_num_envs) x "
                f"env.ray.num_cpus_per_env={per_env} need {actors * per_env:g} CPUs, but the local Ray has {cpus} "
                f"(env.ray.num_cpus={options.num_cpus}); set env.ray.num_cpus_per_env={cpus / actors:g} or less, "
                "raise env.ray.num_cpus (logical CPUs: envs mostly wait for the model), or set env.ray.address")


def validate_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` on the first invalid value (types, ranges, divisibility, unknown keys)."""
    from vldac_lightning.envs import registry

    check_known_keys(cfg)
    check_run_mode(cfg)
    _number(cfg, "seed", integer=True, lo=0)
    if cfg.get("optimized_metric") is not None:
        _choice(cfg, "optimized_metric_direction", ("maximize", "minimize"))
    if cfg.get("torch_threads") is not None:
        _number(cfg, "torch_threads", integer=True, lo=1)
    trainer = cfg.get("trainer")
    if trainer is not None and trainer.get("max_epochs", 1) not in (1, None):
        raise ConfigError(f"trainer.max_epochs={trainer.max_epochs} has no effect here: one epoch is the whole "
                          "rollout stream. Train longer with algo.total_env_steps=...")
    if trainer is not None and trainer.get("max_steps", -1) not in (-1, None):
        raise ConfigError(f"trainer.max_steps={trainer.max_steps} is not used: the run length is "
                          "algo.total_env_steps (env steps), see docs/config.md#run-length")

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
    from vldac_lightning.envs.workers import WORKER_MODES

    if _choice(cfg, "env.pool_mode", WORKER_MODES) == "ray":
        _check_ray(cfg)
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
    check_world(cfg)

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
    _check_run_outputs(cfg)


# MLflow keeps run names up to this length; a longer one (or a path part over 255 bytes) fails late.
MAX_RUN_NAME = 250


def _check_run_outputs(cfg: DictConfig) -> None:
    """Evaluation, sample and checkpoint cadences, episode counts and the run name (train and evaluate)."""
    if cfg.get("callbacks") is not None:  # train
        for key in ("callbacks.evaluation.every_n_iterations", "callbacks.samples.every_n_iterations",
                    "callbacks.model_checkpoint.every_n_iterations"):
            if OmegaConf.select(cfg, key) is not None:
                _number(cfg, key, integer=True, lo=1)  # iterations between two; 0 is not "never"
        if OmegaConf.select(cfg, "callbacks.evaluation.num_episodes") is not None:
            _number(cfg, "callbacks.evaluation.num_episodes", integer=True, lo=1)
    if "num_episodes" in cfg:  # evaluate
        _number(cfg, "num_episodes", integer=True, lo=1)
    name = cfg.get("run_name")
    if name is not None and len(str(name)) > MAX_RUN_NAME:
        raise ConfigError(f"run_name is {len(str(name))} characters long; MLflow keeps at most {MAX_RUN_NAME}: "
                          "shorten it (or leave run_name unset: it is built from the overrides)")
