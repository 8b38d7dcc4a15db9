"""Checkpoint files that are never half-written and never unpickle arbitrary objects."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

__all__ = ["AtomicCheckpointIO", "load_checkpoint", "non_finite_tensors"]


def _umask() -> int:
    """The process umask (POSIX offers no read-only query; the swap back is immediate)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def load_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """``torch.load(..., weights_only=True)``: tensors and plain containers only, no code."""
    return torch.load(path, map_location=map_location, weights_only=True)


def non_finite_tensors(state: dict[str, Any]) -> list[str]:
    """Names of the floating-point tensors in ``state`` that hold a NaN or Inf."""
    return [name for name, t in state.items()
            if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all())]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to a temporary file in the target folder, fsync, then ``os.replace`` it into place.

    A run killed mid-save leaves the previous ``last.ckpt`` intact (plus, at worst, a ``.tmp``
    file), never a truncated one; weights holding NaN/Inf are never written (FloatingPointError).
    Loading is always ``weights_only=True``.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO does not take storage_options")
        target = Path(path)
        bad = non_finite_tensors(checkpoint.get("state_dict", {}))
        if bad:  # a checkpoint that would resume NaN weights is worse than none: keep the previous one
            raise FloatingPointError(
                f"refusing to write {target}: {len(bad)} weight tensor(s) hold NaN/Inf (e.g. {', '.join(bad[:3])}); the "
                "checkpoints already written are left as they were. A learning rate or loss coefficient too large "
                "for this model is the usual cause: lower optimizer.lr (docs/troubleshooting.md)")
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                # mkstemp creates 0600; give the checkpoint the mode a plain open() would (0644 under umask 022).
                os.fchmod(f.fileno(), 0o666 & ~_umask())
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)  # atomic on POSIX within one filesystem
        except OSError as exc:  # a full disk: name the checkpoint (torch's error names no file)
            Path(tmp).unlink(missing_ok=True)
            raise OSError(exc.errno, exc.strerror or str(exc), str(target)) from exc
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        if not Path(path).exists():
            raise FileNotFoundError(f"Checkpoint file not found: {path}")
        return load_checkpoint(path, map_location=map_location or "cpu")
