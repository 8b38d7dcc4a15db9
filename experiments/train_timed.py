"""One training run (``train(cfg)``) with a breakdown of where its wall time goes.

    python experiments/train_timed.py --out timing.json [--run-dir DIR] [hydra overrides, e.g. debug=smoke logger=none]

Times, by wrapping the classes training builds (inclusive: evaluation and rollouts contain their
generate calls, and ``iteration`` — one ``training_step`` — its rollout; ``update_minibatch`` is the
re-scoring + loss of one minibatch, ``ppo_update_s`` the whole update without the rollouts): building
the model, evaluation, rollout collection, the PPO updates, and every
batched ``generate`` with the number of decode steps it ran. Writes one JSON object (also printed
as the last line): wall seconds, the breakdown, the final metrics, peak GPU memory. Used by
experiments/gpu_check.sh; on the CPU it is the quick proxy for the same questions.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

T_PROCESS = time.perf_counter()  # before the heavy imports: they are part of a run's cost

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


class ClassTimers:
    """Wall seconds and call counts of methods, patched on their classes for the whole run."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.decode_steps = 0
        self.generated_tokens = 0
        self._undo: list[Callable[[], None]] = []

    @staticmethod
    def _sync() -> None:
        # CUDA work is asynchronous: without a sync a method's time would land in a later one's.
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()

    def wrap(self, cls: type, name: str, key: str, after: Callable[[Any], None] | None = None) -> None:
        original = cls.__dict__[name]

        def timed(*args: Any, **kwargs: Any) -> Any:
            self._sync()
            t0 = time.perf_counter()
            out = original(*args, **kwargs)
            self._sync()
            self.seconds[key] += time.perf_counter() - t0
            self.calls[key] += 1
            if after is not None:
                after(out)
            return out

        setattr(cls, name, timed)
        self._undo.append(lambda: setattr(cls, name, original))

    def count_generated(self, out: tuple[torch.Tensor, ...]) -> None:
        response, mask = out[0], out[1]
        self.decode_steps += int(response.shape[1])  # a batched generate runs until its longest response ends
        self.generated_tokens += int(mask.sum())

    def remove(self) -> None:
        for undo in reversed(self._undo):
            undo()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--run-dir", default=None, help="the run's own outputs (checkpoints); default beside --out")
    args, overrides = ap.parse_known_args()

    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from vldac_lightning.callbacks.evaluation import PeriodicEvaluation
    from vldac_lightning.models.module import ActorCriticModule
    from vldac_lightning.models.policy import VLMPolicy
    from vldac_lightning.rollout.collector import RolloutCollector
    from vldac_lightning.train import train

    out_dir = Path(args.run_dir or Path(args.out).resolve().parent / (Path(args.out).stem + "_run")).resolve()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train.yaml", overrides=overrides)
    with open_dict(cfg):  # compose() does not resolve hydra.run.dir: give the run its own folder
        cfg.paths.output_dir = str(out_dir)
        cfg.paths.log_dir = str(out_dir)

    timers = ClassTimers()
    timers.wrap(ActorCriticModule, "configure_model", "build_model")
    timers.wrap(PeriodicEvaluation, "evaluate", "evaluation")
    timers.wrap(RolloutCollector, "collect", "rollout")
    timers.wrap(ActorCriticModule, "training_step", "iteration")
    timers.wrap(ActorCriticModule, "minibatch_loss", "update_minibatch")
    timers.wrap(VLMPolicy, "generate_scored", "generate", after=timers.count_generated)
    t_train = time.perf_counter()
    status, error = "ok", None
    metrics: dict[str, float] = {}
    try:
        metrics, _ = train(cfg)
    except Exception as exc:  # the record of a failed run is still written
        status, error = "failed", f"{type(exc).__name__}: {exc}"
    train_s = time.perf_counter() - t_train
    timers.remove()
    gen_s = timers.seconds["generate"]
    result = {
        "status": status,
        "error": error,
        "overrides": overrides,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "wall_s": round(time.perf_counter() - T_PROCESS, 2),
        "train_s": round(train_s, 2),
        "startup_s": round(t_train - T_PROCESS, 2),  # imports + config
        "seconds": {k: round(v, 2) for k, v in sorted(timers.seconds.items())},
        # An iteration (one training_step) collects its rollout first: take it out.
        "ppo_update_s": round(timers.seconds["iteration"] - timers.seconds["rollout"], 2),
        "calls": dict(sorted(timers.calls.items())),
        "decode_steps": timers.decode_steps,
        "generated_tokens": timers.generated_tokens,
        "ms_per_decode_step": round(1000 * gen_s / max(timers.decode_steps, 1), 2),
        "peak_gpu_mem_gb": (round(torch.cuda.max_memory_allocated() / 2**30, 2)
                            if torch.cuda.is_available() and torch.cuda.is_initialized() else None),
        "metrics": {k: float(v) for k, v in metrics.items()},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    sys.exit(0 if status == "ok" else 1)


if __name__ == "__main__":
    main()
