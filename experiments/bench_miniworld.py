"""MiniWorld env throughput in parallel pools (headless EGL rendering, prompts and parsing included;
no model).

    python experiments/bench_miniworld.py [--env miniworld/OneRoom-v0] [--workers 1 4 8]
        [--size 80x60] [--seconds 8] [--out experiments/results/bench_miniworld.json]

For each worker count N: an async pool (N subprocesses, spawn, one GL context each) steps with
uniformly random valid answers for ``--seconds`` after a warm-up, and reports env steps/s, the
speed-up over one worker and the pool's start-up time (process spawn + first ``gym.make``). A
sync pool of the largest N (all envs in this process) is measured too. Episodes follow the
training rules (image history 4, 128-step limit, auto-reset).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from vldac_lightning.envs import EnvPool, train_seeds
from vldac_lightning.envs.factory import LanguageEnvThunk


def spec(env_id: str, width: int, height: int) -> dict:
    return {
        "id": env_id, "env_kwargs": {"obs_width": width, "obs_height": height}, "image_history": 4,
        "max_episode_steps": 128, "parse_failure": "random", "parse_failure_penalty": -1.0,
    }


def measure(env_id: str, n: int, mode: str, width: int, height: int, seconds: float) -> dict:
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    with EnvPool([LanguageEnvThunk(spec(env_id, width, height), "json")] * n, mode=mode,
                 seeds=train_seeds(0, n)) as pool:
        pool.reset()
        startup = time.perf_counter() - t0
        names = pool.action_names

        def answers() -> list[str]:
            return [json.dumps({"thoughts": "bench", "action": names[i]}) for i in rng.integers(len(names), size=n)]

        for _ in range(20):  # warm-up
            pool.step(answers())
        steps, episodes, start = 0, 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            episodes += len(pool.step(answers()).episodes)
            steps += n
        elapsed = time.perf_counter() - start
    return {"workers": n, "mode": mode, "steps_per_s": round(steps / elapsed, 1), "startup_s": round(startup, 2),
            "env_steps": steps, "episodes": episodes}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", default="miniworld/OneRoom-v0")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--size", default="80x60", help="observation WIDTHxHEIGHT")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--out", default=None, help="also write the results as JSON here")
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    load_before = os.getloadavg()[0]  # other processes on the machine skew everything: record it
    rows = [measure(args.env, n, "async", width, height, args.seconds) for n in args.workers]
    rows.append(measure(args.env, max(args.workers), "sync", width, height, args.seconds))
    base = rows[0]["steps_per_s"]
    load = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    print(f"{args.env} at {width}x{height}, {os.cpu_count()} CPUs, 1-min load average {load[0]} -> {load[1]}")
    for r in rows:
        r["speedup_vs_1"] = round(r["steps_per_s"] / base, 2)
        print(f"  {r['mode']:5s} {r['workers']:2d} workers: {r['steps_per_s']:7.1f} env steps/s "
              f"(x{r['speedup_vs_1']:.2f}), start-up {r['startup_s']:.1f} s")
    out = {"env": args.env, "size": [width, height], "cpus": os.cpu_count(), "machine": platform.machine(),
           "load_average_1min": load,
           "seconds": args.seconds, "rows": rows}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
