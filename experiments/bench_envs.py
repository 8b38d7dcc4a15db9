"""Env throughput (rendering, prompt formatting and parsing included; no model).

    python experiments/bench_envs.py [--env gym_cards/NumberLine-v0] [--steps 3000]

Prints env steps/s of one LanguageEnv and of 8-env pools (async subprocesses and sync), then one
JSON line with the same numbers.
"""

from __future__ import annotations

import argparse
import json
import time

from vldac_lightning.envs import EnvPool, train_seeds
from vldac_lightning.envs.factory import LanguageEnvThunk

ENV_CFG = {"image_history": 1, "max_episode_steps": 20, "parse_failure": "random", "parse_failure_penalty": -1.0}


def single(env_id: str, n: int) -> float:
    env = LanguageEnvThunk({"id": env_id, **ENV_CFG}, "json")()
    env.reset(seed=0)
    names = env.action_names
    t0 = time.perf_counter()
    for t in range(n):
        text = json.dumps({"thoughts": "bench", "action": names[t % len(names)]})
        _, _, term, trunc, _ = env.step(text)
        if term or trunc:
            env.reset()
    return n / (time.perf_counter() - t0)


def pool(env_id: str, n_envs: int, n_steps: int, mode: str) -> float:
    thunk = LanguageEnvThunk({"id": env_id, **ENV_CFG}, "json")
    with EnvPool([thunk] * n_envs, mode=mode, seeds=train_seeds(0, n_envs)) as p:
        p.reset()
        names = p.action_names
        for _ in range(10):  # warm-up
            p.step([json.dumps({"action": names[0]})] * n_envs)
        t0 = time.perf_counter()
        for t in range(n_steps):
            p.step([json.dumps({"action": names[(t + i) % len(names)]}) for i in range(n_envs)])
        return n_envs * n_steps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--env", default="gym_cards/NumberLine-v0")
    ap.add_argument("--steps", type=int, default=3000)
    args = ap.parse_args()
    out = {
        "env": args.env,
        "single_steps_per_s": round(single(args.env, args.steps)),
        "pool8_async_steps_per_s": round(pool(args.env, 8, args.steps // 8, "async")),
        "pool8_sync_steps_per_s": round(pool(args.env, 8, args.steps // 8, "sync")),
    }
    print(f"single LanguageEnv: {out['single_steps_per_s']} env steps/s")
    print(f"8-env async pool:   {out['pool8_async_steps_per_s']} env steps/s")
    print(f"8-env sync pool:    {out['pool8_sync_steps_per_s']} env steps/s")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
