"""Several training processes (Lightning DDP/FSDP) seen from the rest of the code.

Every rank collects its own share of a rollout. What must equal a single process's computation on
the union of the ranks' rollouts goes through the helpers here: sums, means and standard
deviations are all-reduced; everything else (the ranks' env-pool states for a checkpoint) is
gathered as Python objects. Outside a distributed run every helper is the identity, so single-process
numbers are computed exactly as before (docs/config.md#several-gpus-or-nodes-lightning-ddp--fsdp).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "all_gather_object",
    "all_reduce_max",
    "all_reduce_sum",
    "global_mean_std",
    "is_distributed",
    "local_minibatch",
    "rank",
    "split_problem",
    "world_size",
    "world_size_from_trainer",
]

def local_minibatch(minibatch_size: int, grad_accum_steps: int, ranks: int) -> tuple[int, int]:
    """This rank's (minibatch size, accumulation steps): one optimizer step still sees
    ``minibatch_size × grad_accum_steps`` env steps over all ranks together.

    The minibatch is split when it divides by ``ranks`` (the accumulation stays), else the
    accumulation (the 7B recipes' 1 × 128 over 8 GPUs: 1 × 16 per rank); neither → ValueError.
    """
    if minibatch_size % ranks == 0:
        return minibatch_size // ranks, grad_accum_steps
    if grad_accum_steps % ranks == 0:
        return minibatch_size, grad_accum_steps // ranks
    raise ValueError(f"algo.minibatch_size={minibatch_size} x algo.grad_accum_steps={grad_accum_steps} does not "
                     f"split over {ranks} training processes: one of them must be a multiple of {ranks}")


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def _device() -> torch.device:
    # NCCL reduces CUDA tensors only; gloo reduces CPU tensors.
    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _all_reduce(x: torch.Tensor, op: Any) -> torch.Tensor:
    if not is_distributed():
        return x
    y = x.detach().to(_device(), copy=True)
    dist.all_reduce(y, op=op)
    return y.to(x.device)


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum of ``x`` over all ranks (a new tensor on ``x``'s device); ``x`` itself outside DDP."""
    return _all_reduce(x, dist.ReduceOp.SUM)


def all_reduce_max(x: torch.Tensor) -> torch.Tensor:
    """Elementwise maximum of ``x`` over all ranks; ``x`` itself outside DDP."""
    return _all_reduce(x, dist.ReduceOp.MAX)


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` outside DDP)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def global_mean_std(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and population std of the entries of ``x`` on all ranks together (float64 sums).

    Equal, up to rounding, to ``cat(x of every rank).mean()`` / ``.std(unbiased=False)``.
    """
    flat = x.detach().reshape(-1).to(torch.float64)
    sums = all_reduce_sum(torch.stack([flat.sum(), (flat * flat).sum(), torch.tensor(float(flat.numel()),
                                                                                    dtype=torch.float64)]))
    total, total_sq, n = float(sums[0]), float(sums[1]), int(sums[2])
    if n == 0:
        raise ValueError("global_mean_std: no entries on any rank")
    mean = total / n
    std = max(total_sq / n - mean * mean, 0.0) ** 0.5
    return torch.tensor(mean, dtype=x.dtype, device=x.device), torch.tensor(std, dtype=x.dtype, device=x.device)


def world_size_from_trainer(trainer_cfg: Mapping[str, Any]) -> int:
    """The number of ranks a trainer config starts (``trainer.devices`` × ``trainer.num_nodes``),
    known before they are launched.

    ``devices`` may be an int, a list of device ids, ``"auto"`` or ``-1``; the last two mean every
    visible GPU (CPU: one process). Only a strategy that launches several processes counts them.
    """
    strategy = trainer_cfg.get("strategy")
    name = strategy if isinstance(strategy, str) else (strategy or {}).get("_target_", "")
    if not any(s in str(name).lower() for s in ("ddp", "fsdp", "deepspeed")):
        return 1
    nodes = int(trainer_cfg.get("num_nodes", 1) or 1)
    devices = trainer_cfg.get("devices", 1)
    if isinstance(devices, (list, tuple)) or (hasattr(devices, "__len__") and not isinstance(devices, str)):
        n = len(devices)
    elif str(devices) in ("auto", "-1"):
        accel = str(trainer_cfg.get("accelerator", "auto"))
        n = torch.cuda.device_count() if accel in ("gpu", "cuda", "auto") and torch.cuda.is_available() else 1
    else:
        n = int(str(devices).rstrip(","))
    return max(n, 1) * nodes


def split_problem(*, num_envs: int, rollout_steps: int, minibatch_size: int, grad_accum_steps: int,
                  group_size: int, ranks: int) -> str | None:
    """Why these global sizes cannot be shared evenly by ``ranks`` training processes (None: they can).

    Each rank takes 1/N of ``env.num_envs`` and ``algo.rollout_steps``, its envs must be whole task
    groups, and an optimizer step's batch must split (:func:`local_minibatch`).
    """
    if ranks == 1:
        return None
    for key, value in (("env.num_envs", num_envs), ("algo.rollout_steps", rollout_steps)):
        if value % ranks:
            return (f"{key}={value} does not split over {ranks} training processes (trainer.devices x "
                    f"trainer.num_nodes): it is global, each rank takes 1/{ranks}; use a multiple of {ranks}")
    if (num_envs // ranks) % group_size:
        return (f"env.num_envs={num_envs} over {ranks} ranks gives {num_envs // ranks} envs per rank, not whole "
                f"task groups of env.group_size={group_size}: use a multiple of {ranks * group_size}")
    try:
        local_minibatch(minibatch_size, grad_accum_steps, ranks)
    except ValueError as exc:
        return str(exc)
    return None


# Decoder-layer classes of the model families we configure (conf/model/); FSDP shards one per unit.
DECODER_LAYER_CLASSES = (
    "transformers.models.qwen2_vl.modeling_qwen2_vl.Qwen2VLDecoderLayer",
    "transformers.models.qwen2_5_vl.modeling_qwen2_5_vl.Qwen2_5_VLDecoderLayer",
)


def decoder_layer_wrap_policy(class_paths: tuple[str, ...] | list[str] = DECODER_LAYER_CLASSES) -> set[type]:
    """FSDP's ``auto_wrap_policy`` for ``trainer=fsdp``: the decoder-layer classes that import here."""
    import importlib

    found: set[type] = set()
    for path in class_paths:
        module, _, name = str(path).rpartition(".")
        try:
            found.add(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):  # an older/newer transformers without that family
            continue
    if not found:
        raise ValueError(f"trainer=fsdp: none of the decoder-layer classes {list(class_paths)} imports; set "
                         "trainer.strategy.auto_wrap_policy.class_paths to your model's layer class")
    return found
