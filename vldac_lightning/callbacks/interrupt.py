"""On a stop signal, write a checkpoint where that resumes exactly (see utils/interrupt.py)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException

from vldac_lightning.utils.interrupt import RunInterrupted, reclaim_signals

log = logging.getLogger(__name__)


class InterruptCheckpoint(L.Callback):
    """Saves ``last.ckpt`` when a run is stopped by a signal at a point where it is exact.

    Exact means between iterations, or inside one before its first optimizer step: the rollout
    collected so far is dropped and the checkpoint holds the state the iteration started from, so
    the resumed run repeats it sample for sample. Mid-update (after an optimizer step) nothing is
    written and the last periodic checkpoint stands. ``saved_path`` tells ``train()`` which it was.
    """

    def __init__(self) -> None:
        self.saved_path: str | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        # Lightning installs its SIGTERM handler just before this hook; it is not safe across ranks
        # (utils/interrupt.reclaim_signals), so under DDP ours takes over again. First in the callback
        # list (train.build_callbacks), before the initial evaluation.
        if trainer.world_size > 1:
            reclaim_signals()

    def on_exception(self, trainer: L.Trainer, pl_module: Any, exception: BaseException) -> None:
        if not isinstance(exception, (RunInterrupted, SIGTERMException)):
            return
        dm = trainer.datamodule
        ckpt_cb = trainer.checkpoint_callback
        if dm is None or ckpt_cb is None or getattr(ckpt_cb, "dirpath", None) is None:
            return
        if not dm.safe_to_checkpoint(trainer.global_step):
            log.warning("Stopped in the middle of an update: no checkpoint written (it would not resume exactly)")
            return
        path = Path(ckpt_cb.dirpath) / f"{ckpt_cb.CHECKPOINT_NAME_LAST}{ckpt_cb.FILE_EXTENSION}"
        trainer.save_checkpoint(path, weights_only=False)
        self.saved_path = str(path)
        log.info("Stopped: checkpoint written to %s (optimizer step %d)", path, trainer.global_step)
