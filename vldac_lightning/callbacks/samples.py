"""Log what the model saw and said: a sample observation with its generated text, per iteration."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from PIL import Image


class RolloutSamples(L.Callback):
    """Every ``every_n_iterations``, store env 0's last prompt images, prompt text and response."""

    def __init__(self, every_n_iterations: int = 5) -> None:
        self.every = max(1, int(every_n_iterations))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if batch.iteration % self.every != 0:  # a batch is a whole PPO iteration
            return
        stats = trainer.datamodule.last_rollout_stats
        if stats is None or stats.sample is None:
            return
        obs, text = stats.sample
        step = pl_module.env_steps
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / f"step_{step:08d}"
            folder.mkdir()
            for i, frame in enumerate(obs["images"]):
                Image.fromarray(np.asarray(frame, dtype=np.uint8)).save(folder / f"image_{i}.png")
            (folder / "sample.json").write_text(json.dumps({"env_steps": step, "prompt": obs["text"],
                                                            "response": text}, indent=2))
            for logger in trainer.loggers:
                # Our MLflow logger's client drops (and counts) the sample while the store is down.
                client, run_id = getattr(logger, "experiment", None), getattr(logger, "run_id", None)
                if run_id is not None and hasattr(client, "log_artifacts"):
                    client.log_artifacts(run_id, str(folder), artifact_path=f"samples/{folder.name}")
