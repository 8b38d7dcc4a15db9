"""Env steps/s of the three pool modes (sync, async, ray) on one machine: no model, random valid texts.

    python experiments/bench_pool_modes.py [--env gym_cards/NumberLine-v0] [--sizes 8 16] [--rounds 3]

For each pool size and mode: start-up (build + first reset) and env steps/s over ``--env-steps``
steps with random valid JSON answers (rendering, prompt formatting and parsing included). Modes
are measured in interleaved rounds (sync, async, ray, sync, ...) and the median round is reported,
so a load spike from other work on the machine hits every mode alike. The local Ray starts once
(its start-up is reported apart). Results: ``experiments/results/pool_modes.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from vldac_lightning.envs import EnvPool, train_seeds
from vldac_lightning.envs.factory import LanguageEnvThunk
from vldac_lightning.envs.ray_worker import RayOptions, init_ray

ENV_CFG = {"image_history": 1, "max_episode_steps": 20, "parse_failure": "random", "parse_failure_penalty": -1.0}
MODES = ("sync", "async", "ray")
OUT = Path(__file__).parent / "results" / "pool_modes.json"


def measure(env_id: str, mode: str, n_envs: int, env_steps: int, rng: np.random.Generator) -> dict[str, float]:
    thunk = LanguageEnvThunk({"id": env_id, **ENV_CFG}, "json")
    t0 = time.perf_counter()
    with EnvPool([thunk] * n_envs, mode=mode, seeds=train_seeds(0, n_envs)) as pool:
        pool.reset()
        startup = time.perf_counter() - t0
        names = pool.action_names
        texts = [[json.dumps({"thoughts": "bench", "action": names[k]}) for k in rng.integers(len(names), size=n_envs)]
                 for _ in range(max(1, env_steps // n_envs))]
        for t in texts[:5]:  # warm-up: first-step caches, lazy imports in the workers
            pool.step(t)
        t1 = time.perf_counter()
        for t in texts:
            pool.step(t)
        elapsed = time.perf_counter() - t1
    return {"startup_s": startup, "steps_per_s": len(texts) * n_envs / elapsed}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--env", default="gym_cards/NumberLine-v0")
    ap.add_argument("--sizes", type=int, nargs="+", default=[8, 16])
    ap.add_argument("--env-steps", type=int, default=1600, help="env steps per measurement")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ray-cpus", type=int, default=None, help="logical CPUs of the local Ray (default: cores)")
    args = ap.parse_args()

    t0 = time.perf_counter()
    ray = init_ray(RayOptions(num_cpus=args.ray_cpus))
    ray_startup = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    load_before = os.getloadavg()
    runs: dict[str, list[dict[str, float]]] = {}
    for r in range(args.rounds):
        for n in args.sizes:
            for mode in MODES:
                result = measure(args.env, mode, n, args.env_steps, rng)
                runs.setdefault(f"{mode}/{n}", []).append(result)
                print(f"round {r}: {mode:5s} {n:2d} envs  {result['steps_per_s']:7.0f} env steps/s  "
                      f"(start-up {result['startup_s']:.2f} s)", flush=True)
    summary: dict[str, Any] = {}
    for key, rounds in runs.items():
        summary[key] = {
            "steps_per_s_median": round(statistics.median(x["steps_per_s"] for x in rounds)),
            "steps_per_s_rounds": [round(x["steps_per_s"]) for x in rounds],
            "startup_s_median": round(statistics.median(x["startup_s"] for x in rounds), 2),
        }
    out = {
        "env": args.env, "env_steps_per_measurement": args.env_steps, "rounds": args.rounds,
        "texts": "random valid JSON answers", "ray_version": ray.__version__,
        "ray_init_s": round(ray_startup, 2), "ray_logical_cpus": ray.cluster_resources().get("CPU"),
        "cpu_count": os.cpu_count(), "machine": platform.processor() or platform.machine(),
        "loadavg_1m_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "results": summary,
    }
    ray.shutdown()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=2) + "\n")
    print()
    print(f"{'envs':>4s} " + " ".join(f"{m:>8s}" for m in MODES) + "   (median env steps/s)")
    for n in args.sizes:
        print(f"{n:4d} " + " ".join(f"{summary[f'{m}/{n}']['steps_per_s_median']:8d}" for m in MODES))
    print(f"Ray start-up {out['ray_init_s']} s; load average {out['loadavg_1m_before_after']}; wrote {OUT}")


if __name__ == "__main__":
    main()
