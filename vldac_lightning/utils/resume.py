"""Check a checkpoint against the config it is resumed or evaluated with, before anything heavy runs.

Every checkpoint carries the run's resolved config (``checkpoint["vldac_config"]``). A resume whose
env, model or algorithm differs is refused with the differing keys listed — before the model is
loaded and before the MLflow run is reopened — and ``ckpt_path=last`` picks the newest ``last.ckpt``
whose config matches. See docs/troubleshooting.md ("Resuming").
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vldac_lightning.utils.config import ConfigError

log = logging.getLogger(__name__)

CONFIG_KEY = "vldac_config"
# What must match for a checkpoint to continue the same experiment.
IDENTITY_SECTIONS = ("env", "model", "algo")
# Keys that may change on resume: the budget (train longer), and how envs run, not what they are.
RESUMABLE_CHANGES = frozenset({
    "algo.total_env_steps", "env.pool_mode", "env.eval_num_envs", "env.step_timeout_s",
    "env.reset_timeout_s", "env.max_restarts", "env.ray.address", "env.ray.num_cpus_per_env", "env.ray.num_cpus",
    "model.local_files_only", "model.merge_lora_for_generation",
})
# Whole groups that may change on resume: how responses are generated, not what the model is
# (every engine samples the same distribution; docs/engines.md).
RESUMABLE_PREFIXES = ("model.engine.",)


def _flatten(d: Any, prefix: str) -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def differing_keys(saved: dict[str, Any], current: dict[str, Any], sections: Sequence[str] = IDENTITY_SECTIONS,
                   ignore: Iterable[str] = RESUMABLE_CHANGES) -> list[str]:
    """Dotted keys inside ``sections`` whose values differ between two resolved configs (sorted)."""
    ignored = set(ignore)
    a = {k: v for s in sections for k, v in _flatten(saved.get(s, {}), s).items()}
    b = {k: v for s in sections for k, v in _flatten(current.get(s, {}), s).items()}
    missing = object()
    return sorted(k for k in set(a) | set(b) if k not in ignored and not k.startswith(RESUMABLE_PREFIXES)
                  and a.get(k, missing) != b.get(k, missing))


def describe_differences(saved: dict[str, Any], current: dict[str, Any], keys: Sequence[str], limit: int = 12) -> str:
    """``key: checkpoint value -> current value`` lines for an error message."""
    a, b = _flatten(saved, ""), _flatten(current, "")
    lines = [f"  {k}: {a.get(k, '<absent>')!r} (checkpoint) -> {b.get(k, '<absent>')!r} (now)" for k in keys[:limit]]
    if len(keys) > limit:
        lines.append(f"  ... and {len(keys) - limit} more")
    return "\n".join(lines)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint's contents, memory-mapped (a 7B LoRA checkpoint is read lazily, not copied).

    A file that does not load (truncated, not a checkpoint) is a :class:`ConfigError` naming it and the
    newest intact checkpoint beside it."""
    import pickle

    try:
        return _load(path)
    except pickle.UnpicklingError:  # weights_only refused pickled code: that message says so itself
        raise
    except Exception as exc:  # torch's own error names no file
        raise ConfigError(_unreadable_message(Path(path), exc)) from None


def _load(path: str | Path) -> dict[str, Any]:
    import torch

    try:
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # mmap needs the zip format; an old-format file loads the normal way
        return torch.load(str(path), map_location="cpu", weights_only=True)


def _unreadable_message(path: Path, exc: Exception) -> str:
    """Which file is corrupt, and the newest intact checkpoint in its folder to use instead."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    message = f"checkpoint {path} cannot be read: it is truncated or not a checkpoint ({type(exc).__name__}: {first})."
    siblings = sorted((p for p in path.parent.glob("*.ckpt") if p.resolve() != path.resolve()),
                      key=lambda p: p.stat().st_mtime, reverse=True)
    for other in siblings:
        try:
            _load(other)
        except Exception:  # noqa: BLE001 - only an intact one is offered
            continue
        return f"{message} The newest intact checkpoint beside it is {other}: pass ckpt_path={other}"
    return f"{message} No intact checkpoint is beside it: start without ckpt_path, or pass another run's checkpoint"


def saved_config(path: str | Path) -> dict[str, Any] | None:
    return read_checkpoint(path).get(CONFIG_KEY)


def find_matching_last(log_dir: str | Path, current: dict[str, Any], task_name: str = "train",
                       differences: Callable[[dict[str, Any], dict[str, Any]], list[str]] = differing_keys,
                       what: str = "env, model and algorithm") -> str:
    """``ckpt_path=last``: the newest ``last.ckpt`` under ``log_dir/<task_name>`` that ``differences``
    (saved config, current config) finds no difference in (a resume: env, model and algorithm).
    Newer checkpoints of other experiments are skipped (and named)."""
    root = Path(log_dir, task_name)
    candidates = sorted(root.glob("**/checkpoints/last*.ckpt"), key=lambda p: p.stat().st_mtime, reverse=True)
    if not candidates:
        raise ConfigError(f"ckpt_path=last but no last.ckpt exists under {root}; "
                          "pass an explicit ckpt_path=... or start without one")
    skipped: list[tuple[Path, list[str]]] = []
    for path in candidates:
        saved = saved_config(path)
        if saved is None:  # written before checkpoints carried their config: cannot tell, take it
            log.warning("%s carries no config (older version): cannot check it matches this run", path)
            return str(path)
        diff = differences(saved, current)
        if not diff:
            for other, keys in skipped:
                log.info("ckpt_path=last: skipped newer %s (differs in %s)", other, ", ".join(keys[:4]))
            return str(path)
        skipped.append((path, diff))
    newest, diff = skipped[0]
    raise ConfigError(
        f"ckpt_path=last: none of the {len(candidates)} last.ckpt under {root} was trained with this "
        f"{what}. The newest, {newest}, differs in:\n"
        f"{describe_differences(saved_config(newest) or {}, current, diff)}\n"
        "Pass the same overrides as that run, an explicit ckpt_path=..., or start without ckpt_path.")


@dataclass
class ResumeCheck:
    """What :func:`check_resume` found out about a checkpoint."""

    ckpt_path: str
    global_step: int
    mlflow_run_id: str | None
    saved: dict[str, Any] | None


def check_world_size(ckpt: dict[str, Any], ckpt_path: str, current: dict[str, Any]) -> None:
    """A checkpoint holds one env-pool and RNG state per training process: resume on as many."""
    from vldac_lightning.utils.distributed import world_size_from_trainer

    states = [v for k, v in ckpt.items() if k.endswith("DataModule") and isinstance(v, dict)]
    saved = int(states[0].get("world_size", 1)) if states else 1
    now = world_size_from_trainer(current.get("trainer") or {})
    if saved != now:
        raise ConfigError(
            f"ckpt_path={ckpt_path} was written by {saved} training process(es) and this run starts {now}: each "
            f"rank's env pool and RNG state is in the checkpoint, so resume with trainer.devices x "
            f"trainer.num_nodes = {saved}" + (" (trainer=ddp)" if saved > 1 else ""))


def check_resume(ckpt_path: str, current: dict[str, Any], *, optimizer_steps_per_iteration: int,
                 num_iterations: int, strict: bool = True) -> ResumeCheck:
    """Refuse a resume that would train another experiment or has nothing left to train."""
    if not Path(ckpt_path).is_file():
        raise ConfigError(f"ckpt_path={ckpt_path!r} is not a file; pass a checkpoint path or ckpt_path=last")
    ckpt = read_checkpoint(ckpt_path)
    saved = ckpt.get(CONFIG_KEY)
    if saved is None:
        log.warning("%s carries no config (older version): cannot check it matches this run's env/model/algo",
                    ckpt_path)
    else:
        diff = differing_keys(saved, current)
        if diff:
            message = (f"ckpt_path={ckpt_path} was trained with a different env, model or algorithm:\n"
                       f"{describe_differences(saved, current, diff)}\n")
            if strict:
                raise ConfigError(message + "Resume with the checkpoint's settings (the run's .hydra/overrides.yaml "
                                  "lists them), start a new run without ckpt_path, or pass resume_strict=false "
                                  "to continue anyway.")
            log.warning("%sresume_strict=false: continuing anyway", message)
    check_world_size(ckpt, ckpt_path, current)
    global_step = int(ckpt.get("global_step", 0))
    done = global_step // max(optimizer_steps_per_iteration, 1)
    if done >= num_iterations:
        steps = int(current["algo"]["rollout_steps"]) * num_iterations
        raise ConfigError(
            f"ckpt_path={ckpt_path} has finished all {num_iterations} iterations of algo.total_env_steps="
            f"{current['algo']['total_env_steps']} ({steps} env steps): there is nothing left to train, and the "
            "finished run is left as it is. To train longer, raise algo.total_env_steps; to measure it, run "
            f"python -m vldac_lightning.evaluate ckpt_path={ckpt_path}")
    run_id = ckpt.get("mlflow_run_id")
    return ResumeCheck(str(ckpt_path), global_step, str(run_id) if run_id else None, saved)


def check_trainable_shapes(module: Any, ckpt_path: str) -> None:
    """Compare the checkpoint's trainable tensors with the built model's, before Lightning loads them
    (a mismatch there is a 60-line size-mismatch dump, after the MLflow run was reopened)."""
    state = read_checkpoint(ckpt_path).get("state_dict", {})
    params = {n: p for n, p in module.named_parameters() if p.requires_grad}
    missing = sorted(set(params) - set(state))
    wrong = [f"  {n}: {tuple(state[n].shape)} (checkpoint) vs {tuple(p.shape)} (model)"
             for n, p in params.items() if n in state and tuple(state[n].shape) != tuple(p.shape)]
    if missing or wrong:
        detail = "\n".join(wrong[:5]) if wrong else "  missing: " + ", ".join(missing[:5])
        count = len(wrong) if wrong else len(missing)
        raise ConfigError(f"ckpt_path={ckpt_path} does not fit this model ({count} tensors):\n{detail}\n"
                          "Use the model=/model.* settings it was trained with (see the run's .hydra/overrides.yaml).")
