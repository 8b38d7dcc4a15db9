"""WebShop numbers for the README / docs: catalog build time and search-index memory, BM25 top-10
recall, three scripted policies on the evaluation goals, env steps/s of one worker and of a pool.

Policies (each through the real env: Flask store + headless Chromium):
* ``expert``: the env's scripted expert (search the instruction, open the goal product when it
  is listed, choose the goal options, buy);
* ``rule``: WebShop's published rule baseline (baseline_models/test.py): search the whole
  instruction, open the first result, buy at once (no options chosen);
* ``random``: a uniformly random listed action each step (on the search page that is the search).

``rule_store_*`` scores the rule baseline on *every* evaluation goal without a browser (the same
search and reward functions the store serves), a cheap cross-check of the env numbers.
Writes ``--out`` (default experiments/results/webshop_bench.json).

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD python experiments/bench_webshop.py --episodes 100 \
        --env-kwargs '{"num_products": 20000}' --catalog-sizes 2000,20000,50000 \
        --out experiments/results/webshop_bench_after.json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import time
import tracemalloc
from pathlib import Path
from typing import Any

from vldac_lightning.envs.factory import LanguageEnvThunk
from vldac_lightning.envs.pool import EnvPool, eval_seeds
from vldac_lightning.envs.webshop import store as store_module
from vldac_lightning.envs.webshop.catalog import catalog_options
from vldac_lightning.envs.webshop.reward import purchase_reward
from vldac_lightning.envs.webshop.search import ProductSearch

POLICIES = ("expert", "rule", "random")


def env_cfg(env_kwargs: dict[str, Any], horizon: int) -> dict[str, Any]:
    return {"id": "webshop/WebShop-v0", "env_kwargs": env_kwargs, "image_history": 2,
            "max_episode_steps": horizon, "parse_failure": "penalty", "parse_failure_penalty": 0.0}


def act(action: str) -> str:
    return json.dumps({"thoughts": "", "action": action})


def rule_action(native: Any) -> str:  # noqa: ANN401 - the env's unwrapped WebShopEnv
    """WebShop's rule baseline: search the instruction, the first result, Buy Now."""
    page = native._page["page"]
    if page == "search":
        return act(f"search[{native._goal['instruction_text'].lower()}]")
    if page == "results":
        products = [lbl for lbl in native.clickables() if lbl.upper() in native.store.by_asin]
        return act(f"click[{products[0]}]" if products else "click[back to search]")
    return act("click[buy now]")


def play(env: Any, seed: int, policy: str, rng: random.Random) -> tuple[float, int, float]:  # noqa: ANN401
    """(score, steps, seconds spent in step) of one episode."""
    env.reset(seed=seed)
    native, steps, seconds = env.unwrapped, 0, 0.0
    while True:
        if policy == "expert":
            text = native.oracle_text()
        elif policy == "rule":
            text = rule_action(native)
        else:  # uniformly random listed action; a random query is meaningless, so search the instruction
            text = act(rng.choice(native.choices()))
        t = time.perf_counter()
        _, _, terminated, truncated, info = env.step(text)
        seconds += time.perf_counter() - t
        steps += 1
        if terminated or truncated:
            return info["score"], steps, seconds


def _traced_mib(build: Any) -> tuple[Any, float]:  # noqa: ANN401
    """(what ``build()`` returns, the Python + numpy memory it holds afterwards in MiB)."""
    gc.collect()
    tracemalloc.start()
    try:
        value = build()
        return value, tracemalloc.get_traced_memory()[0] / 2**20
    finally:
        tracemalloc.stop()


def store_numbers(env_kwargs: dict[str, Any]) -> dict[str, Any]:
    """Build time, memory, recall and the browserless rule baseline on every eval goal."""
    n, seed, n_eval = env_kwargs["num_products"], env_kwargs.get("catalog_seed", 0), env_kwargs["num_eval_goals"]
    style = catalog_options(env_kwargs.get("catalog"))
    gc.collect()
    t = time.perf_counter()
    store = store_module.Store.generated(n, seed, n_eval, style)
    build_s = time.perf_counter() - t
    t = time.perf_counter()
    ProductSearch(store.products)
    index_s = time.perf_counter() - t
    _, index_mib = _traced_mib(lambda: ProductSearch(store.products))
    _, store_mib = _traced_mib(lambda: store_module.Store.generated(n, seed, n_eval, style))
    goals = store.split(True)
    t = time.perf_counter()
    hits, listed, first, scores = 0, 0, 0, []
    for goal in goals:
        ranked = store.search.search(goal["instruction_text"].lower())
        hits += goal["asin"] in ranked[:10]
        listed += goal["asin"] in ranked
        first += bool(ranked) and ranked[0] == goal["asin"]
        score = purchase_reward(store.by_asin[ranked[0]], goal, store.prices[ranked[0]], {})[0] if ranked else 0.0
        scores.append(score)
    search_ms = (time.perf_counter() - t) / len(goals) * 1000
    return {"catalog_products": len(store.products), "goals_train": len(store.split(False)),
            "goals_eval": len(goals), "store_build_s": build_s, "store_mib": store_mib,
            "search_index_build_s": index_s, "search_index_mib": index_mib, "search_ms_per_query": search_ms,
            "bm25_top10_recall_eval": hits / len(goals), "bm25_top50_recall_eval": listed / len(goals),
            "bm25_top1_is_target_eval": first / len(goals),
            "rule_store_score_mean": statistics.mean(scores),
            "rule_store_success_rate": sum(s >= 1.0 for s in scores) / len(scores)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--episodes", type=int, default=100, help="evaluation goals per policy through the env")
    ap.add_argument("--policies", default=",".join(POLICIES))
    ap.add_argument("--horizon", type=int, default=50, help="max_episode_steps of the env")
    ap.add_argument("--env-kwargs", default="{}", help="JSON env_kwargs (e.g. '{\"num_products\": 2000}')")
    ap.add_argument("--pool", type=int, default=0, help="async pool size for steps/s (0 skips)")
    ap.add_argument("--pool-steps", type=int, default=40, help="pool steps (each steps every worker)")
    ap.add_argument("--catalog-sizes", default="", help="comma-separated catalog sizes: store numbers only")
    ap.add_argument("--out", default="experiments/results/webshop_bench.json")
    args = ap.parse_args()
    env_kwargs = {"num_products": 2000, "num_eval_goals": 500, **json.loads(args.env_kwargs)}
    result: dict[str, Any] = {"env_kwargs": env_kwargs, "horizon": args.horizon, "episodes": args.episodes,
                              "cpu_count": os.cpu_count(), **store_numbers(env_kwargs)}
    if args.catalog_sizes:
        result["catalog_sizes"] = {int(n): store_numbers({**env_kwargs, "num_products": int(n)})
                                   for n in args.catalog_sizes.split(",")}
    print(json.dumps(result, indent=1), flush=True)
    if not args.episodes:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
        return
    cfg = env_cfg(env_kwargs, args.horizon)
    env = LanguageEnvThunk(cfg, "json")()
    rng = random.Random(0)
    for policy in args.policies.split(","):
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
        pool = EnvPool([LanguageEnvThunk(cfg, "json")] * args.pool, mode="async", seeds=eval_seeds(1, args.pool))
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
