"""WebShop numbers for the README / closing note: catalog size, BM25 top-10 recall, expert and
random-policy scores on evaluation goals, env steps/s of one worker and of an async pool (no model).
Writes experiments/results/webshop_bench.json.

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD python experiments/bench_webshop.py --episodes 50 --pool 4
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from pathlib import Path

from vldac_lightning.envs.factory import LanguageEnvThunk
from vldac_lightning.envs.pool import EnvPool, eval_seeds

ENV_CFG = {"id": "webshop/WebShop-v0", "env_kwargs": {}, "image_history": 2, "max_episode_steps": 50,
        "parse_failure": "penalty", "parse_failure_penalty": 0.0}


def play(env, seed: int, policy: str, rng: random.Random) -> tuple[float, int, float]:  # noqa: ANN001
    """(score, steps, seconds spent in step) of one episode."""
    env.reset(seed=seed)
    native, steps, seconds = env.unwrapped, 0, 0.0
    while True:
        if policy == "expert":
            text = native.oracle_text()
        else:  # uniformly random listed action; a random query is meaningless, so search the instruction
            text = json.dumps({"action": rng.choice(native.choices())})
        t = time.perf_counter()
        _, _, terminated, truncated, info = env.step(text)
        seconds += time.perf_counter() - t
        steps += 1
        if terminated or truncated:
            return info["score"], steps, seconds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--episodes", type=int, default=50, help="evaluation goals per policy")
    ap.add_argument("--pool", type=int, default=4, help="async pool size (0 skips)")
    ap.add_argument("--pool-steps", type=int, default=40, help="pool steps (each steps every worker)")
    ap.add_argument("--out", default="experiments/results/webshop_bench.json")
    args = ap.parse_args()
    env = LanguageEnvThunk(ENV_CFG, "json")()
    store = env.unwrapped.store
    goals = store.split(evaluation=False)[:200]
    recall = sum(g["asin"] in store.search.search(g["instruction_text"])[:10] for g in goals) / len(goals)
    rng = random.Random(0)
    result: dict[str, object] = {"catalog_products": len(store.products), "goals_train": len(store.split(False)),
                                 "goals_eval": len(store.split(True)), "bm25_top10_recall_200": recall,
                                 "browser": env.unwrapped._browser.executable, "cpu_count": os.cpu_count()}
    for policy in ("expert", "random"):
        scores, steps, seconds = [], 0, 0.0
        for seed in eval_seeds(0, args.episodes):
            score, n, s = play(env, seed, policy, rng)
            scores.append(score)
            steps, seconds = steps + n, seconds + s
        result[f"{policy}_score_mean"] = statistics.mean(scores)
        result[f"{policy}_success_rate"] = sum(s >= 1.0 for s in scores) / len(scores)
        result[f"{policy}_episode_length_mean"] = steps / len(scores)
        result[f"{policy}_steps_per_s_one_worker"] = steps / seconds
        print(policy, {k: v for k, v in result.items() if k.startswith(policy)}, flush=True)
    env.close()
    if args.pool:
        t = time.perf_counter()
        pool = EnvPool([LanguageEnvThunk(ENV_CFG, "json")] * args.pool, mode="async", seeds=eval_seeds(1, args.pool))
        pool.reset()
        result["pool_start_s"] = time.perf_counter() - t
        try:
            t = time.perf_counter()
            for _ in range(args.pool_steps):  # the expert's moves: every step loads and screenshots a page
                pool.step([text or "{}" for text in pool.call_oracle_texts()])
            seconds = time.perf_counter() - t
        finally:
            pool.close()
        result[f"pool{args.pool}_steps_per_s"] = args.pool * args.pool_steps / seconds
    print(json.dumps(result, indent=1))
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
