"""Wall time of the same training run on 1 process and on 2 DDP processes (CPU, gloo).

    python experiments/bench_ddp.py                 # debug=smoke-sized and a longer 16-iteration run
    python experiments/bench_ddp.py --repeats 3

Each run is a fresh ``python -m vldac_lightning.train`` (``logger=csv``, ``torch_threads=1`` per
process), so the times include start-up (Python imports, model build, for DDP the second process's
launch and the gloo rendezvous). Results: ``experiments/results/ddp_cpu.json``. On a 2-core machine
two ranks share the cores the single process had to itself: this measures the cost of the
machinery, not a speed-up (that needs a device per rank).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = {
    "smoke": ["debug=smoke", "env.num_envs=4"],  # 2 iterations of 8 env steps
    "16_iterations": ["debug=smoke", "env.num_envs=4", "algo.rollout_steps=16", "algo.total_env_steps=256",
                      "callbacks.evaluation.every_n_iterations=8", "callbacks.model_checkpoint.every_n_iterations=8"],
}
RANKS = {1: [], 2: ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]}


def run(overrides: list[str]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "vldac_lightning.train", *overrides, "logger=csv", "torch_threads=1",
                   "trainer.enable_progress_bar=false", f"paths.log_dir={tmp}"]
        start = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                              text=True)
        seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "experiments" / "results" / "ddp_cpu.json"))
    args = parser.parse_args()
    results: dict[str, dict[str, list[float]]] = {}
    for case, overrides in CASES.items():
        results[case] = {}
        for _ in range(args.repeats):  # interleaved, so both see the same machine load
            for ranks, extra in RANKS.items():
                results[case].setdefault(f"{ranks}_rank", []).append(round(run(overrides + extra), 1))
        print(case, {k: statistics.median(v) for k, v in results[case].items()}, flush=True)
    out = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "cases": CASES, "seconds": results,
           "median_s": {c: {k: statistics.median(v) for k, v in r.items()} for c, r in results.items()},
           "load_avg_at_end": os.getloadavg()}
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
