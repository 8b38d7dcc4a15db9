"""Chaos test of the self-healing EnvPool: SIGKILL a random worker every few steps.

    python experiments/chaos_pool.py [--env gym_cards/NumberLine-v0] [--envs 4] [--steps 400] [--kill-every 10]

Prints the restarts survived, episodes finished and dropped, and env steps/s with and without
kills, then one JSON line with the same numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import time

import numpy as np

from vldac_lightning.envs import EnvPool, train_seeds
from vldac_lightning.envs.factory import LanguageEnvThunk

ENV_CFG = {"image_history": 1, "max_episode_steps": 20, "parse_failure": "random", "parse_failure_penalty": -1.0}


def run(env_id: str, n: int, steps: int, kill_every: int | None, seed: int = 0) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    thunk = LanguageEnvThunk({"id": env_id, **ENV_CFG}, "action_only")
    with EnvPool([thunk] * n, mode="async", seeds=train_seeds(seed, n), name=env_id) as pool:
        pool.reset()
        names = pool.action_names
        finished = kills = 0
        start = time.perf_counter()
        for t in range(steps):
            if kill_every and t and t % kill_every == 0:
                os.kill(pool.pids[int(rng.integers(n))], signal.SIGKILL)
                kills += 1
            out = pool.step([names[int(rng.integers(len(names)))] for _ in range(n)])
            finished += len(out.episodes)
        seconds = time.perf_counter() - start
        return {"kills": kills, "restarts": pool.restarts, "dropped_episodes": pool.dropped_episodes,
                "finished_episodes": finished, "env_steps_per_s": steps * n / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="gym_cards/NumberLine-v0")
    parser.add_argument("--envs", type=int, default=4)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--kill-every", type=int, default=10)
    args = parser.parse_args()
    calm = run(args.env, args.envs, args.steps, None)
    chaos = run(args.env, args.envs, args.steps, args.kill_every)
    print(f"{args.env}, {args.envs} async workers, {args.steps} pool steps")
    print(f"  no kills : {calm['env_steps_per_s']:.0f} env steps/s, {calm['finished_episodes']} episodes")
    print(f"  chaos    : {chaos['kills']} SIGKILLs -> {chaos['restarts']} restarts survived, "
          f"{chaos['dropped_episodes']} episodes dropped, {chaos['finished_episodes']} finished, "
          f"{chaos['env_steps_per_s']:.0f} env steps/s")
    print(json.dumps({"env": args.env, "envs": args.envs, "steps": args.steps, "calm": calm, "chaos": chaos}))


if __name__ == "__main__":
    main()
