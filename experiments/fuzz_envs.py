"""Hostile-output fuzz of every installed env: crashes, outcome counts and memory.

    python experiments/fuzz_envs.py [--outputs 10000] [--env ENV_ID ...]

Each output (random bytes, 2 MB text, 50,000-deep JSON, code, prompt injection, empty strings,
over-long numbers, valid and near-valid answers; generator in tests/envs/fuzz_outputs.py) goes
through the env's ``step`` in JSON mode. Prints, per env, the outcome counts and the process RSS
before and after, then one JSON line.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.envs.fuzz_outputs

from tests.envs.fuzz_outputs import hostile_outputs  # noqa: E402
from tests.envs.test_fuzz import JSON_COMMANDS  # noqa: E402
from vldac_lightning.envs.registry import ENV_REGISTRY, make_language_env, missing_requirement  # noqa: E402


def fuzz(env_id: str, n: int) -> dict[str, object]:
    env = make_language_env(env_id, response_mode="json")
    names = JSON_COMMANDS.get(env_id.split("/")[0]) or tuple(getattr(env, "action_names", ("look",)))
    process = psutil.Process(os.getpid())
    outcomes: Counter[str] = Counter()
    env.reset(seed=0)
    gc.collect()
    rss_before = process.memory_info().rss
    start = time.perf_counter()
    crashes = 0
    for _category, text in hostile_outputs(n, names, seed=len(env_id)):
        try:
            _, _, terminated, truncated, info = env.step(text)
        except Exception:  # noqa: BLE001 - counted, that is the point
            crashes += 1
            env.reset()
            continue
        outcomes["valid" if info["action_valid"] else "parse_failure" if not info["parse_ok"] else "invalid"] += 1
        if terminated or truncated:
            env.reset()
    seconds = time.perf_counter() - start
    gc.collect()
    rss_after = process.memory_info().rss
    env.close()
    return {"outputs": n, "crashes": crashes, **outcomes, "rss_before_mib": round(rss_before / 2**20, 1),
            "rss_after_mib": round(rss_after / 2**20, 1), "seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--outputs", type=int, default=10_000)
    parser.add_argument("--env", nargs="*", default=None)
    args = parser.parse_args()
    results = {}
    for env_id in args.env or sorted(ENV_REGISTRY):
        hint = missing_requirement(env_id)
        if hint:
            print(f"{env_id}: skipped ({hint})")
            continue
        r = results[env_id] = fuzz(env_id, args.outputs)
        print(f"{env_id}: {r['outputs']} outputs, {r['crashes']} crashes, valid {r.get('valid', 0)}, "
              f"parse failures {r.get('parse_failure', 0)}, invalid {r.get('invalid', 0)}; "
              f"RSS {r['rss_before_mib']} -> {r['rss_after_mib']} MiB ({r['seconds']} s)")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
