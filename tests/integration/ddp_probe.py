"""Run ``vldac_lightning.train`` and record what each DDP rank computes, for tests/integration/test_ddp.py.

``python tests/integration/ddp_probe.py <overrides...>`` with ``VLDAC_PROBE_DIR`` set. Lightning
re-launches this same script for every other rank (it re-runs ``sys.argv``), so every rank records:
- ``rank{r}_pool.json``: the training pool's copy seeds;
- ``rank{r}_std{i}.pt``: each advantage standardisation's input, mask and output;
- ``rank{r}_opt{n}.pt``: the trainable weights after its n-th optimizer step (1-based, this process);
- ``rank{r}_sigterm.txt``: the SIGTERM handler installed at its first optimizer step.
"""

from __future__ import annotations

import json
import os
import runpy
import signal
from pathlib import Path

import torch

OUT = Path(os.environ["VLDAC_PROBE_DIR"])
OUT.mkdir(parents=True, exist_ok=True)

from vldac_lightning.algo import vldac  # noqa: E402
from vldac_lightning.data.datamodule import RolloutDataModule  # noqa: E402
from vldac_lightning.models.module import ActorCriticModule  # noqa: E402
from vldac_lightning.utils import distributed  # noqa: E402

counts = {"std": 0, "opt": 0}
standardize = vldac.standardize


def probe_standardize(x, mask=None, eps=1e-8):  # type: ignore[no-untyped-def]
    out = standardize(x, mask, eps)
    counts["std"] += 1
    torch.save({"x": x.clone(), "mask": None if mask is None else mask.clone(), "out": out.clone()},
               OUT / f"rank{distributed.rank()}_std{counts['std']}.pt")
    return out


vldac.standardize = probe_standardize
make_pool = RolloutDataModule.make_pool


def probe_make_pool(self, n, seeds, group_size=1):  # type: ignore[no-untyped-def]
    path = OUT / f"rank{distributed.rank()}_pool.json"
    if not path.exists():  # setup() starts the training pool first (then rank 0's evaluation pool)
        path.write_text(json.dumps(list(seeds)))
    return make_pool(self, n, seeds, group_size)


RolloutDataModule.make_pool = probe_make_pool
optimizer_step = ActorCriticModule._optimizer_step


def probe_optimizer_step(self):  # type: ignore[no-untyped-def]
    optimizer_step(self)
    counts["opt"] += 1
    if counts["opt"] == 1:  # whose SIGTERM handler is installed while training runs
        handler = signal.getsignal(signal.SIGTERM)
        (OUT / f"rank{distributed.rank()}_sigterm.txt").write_text(getattr(handler, "__qualname__", type(handler).__name__))
    weights = {n: p.detach().clone() for n, p in self.policy.named_parameters() if p.requires_grad}
    torch.save(weights, OUT / f"rank{distributed.rank()}_opt{counts['opt']}.pt")


ActorCriticModule._optimizer_step = probe_optimizer_step

# Not alter_sys: ``__main__`` stays this script, so Lightning launches the other ranks through it too.
runpy.run_module("vldac_lightning.train", run_name="__main__")
