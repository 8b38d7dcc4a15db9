"""ALFWorld numbers for the README / closing note: generation + expert check per game, reset time,
env steps/s of one worker, and a pool of workers (no model). Writes experiments/results/alfworld_bench.json.

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD python experiments/bench_alfworld.py --games 30 --steps 200
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--games", type=int, default=30, help="games to generate per measurement")
    ap.add_argument("--steps", type=int, default=200, help="env steps for the steps/s measurement")
    ap.add_argument("--pool", type=int, default=4, help="async pool size (0 skips)")
    ap.add_argument("--out", default="experiments/results/alfworld_bench.json")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="alfworld_bench_"))
    os.environ["ALFWORLD_DATA"] = str(tmp)

    from vldac_lightning.envs.alfworld.env import DEFAULT_SPLIT_SIZES, AlfworldEnv
    from vldac_lightning.envs.alfworld.games import GeneratedGames, planner_walkthrough
    from vldac_lightning.envs.alfworld.generator import TASK_TYPES, generate_game

    planner_walkthrough(generate_game("train", 0).problem)  # warm the planner (library load, domain parse)
    scene_s, total_s, plan_len = [], [], []
    games = GeneratedGames(tmp / "games", "train", DEFAULT_SPLIT_SIZES["train"])
    for i in range(1, args.games + 1):
        t = time.perf_counter()
        generate_game("train", i)
        scene_s.append(time.perf_counter() - t)
        games.get(i)
        total_s.append(games.last_generation_s)
        plan_len.append(len(json.loads(games.get(i).path.read_text())["walkthrough"]))

    import fast_downward

    env = AlfworldEnv(source="generated", cache_dir=str(tmp / "games"), response_mode="json")
    rng = random.Random(0)
    resets, replays, steps, t_steps = [], [], 0, 0.0
    seed = 1
    env.reset(seed=seed)  # warm
    while steps < args.steps:
        seed += 1
        fast_downward.pddl2sas.cache_clear()  # a game this process has not translated yet
        t = time.perf_counter()
        env.reset(seed=seed % args.games + 1)  # games on disk: reset cost only
        resets.append(time.perf_counter() - t)
        t = time.perf_counter()
        env.reset(seed=seed % args.games + 1)  # the same game again (evaluation seeds repeat)
        replays.append(time.perf_counter() - t)
        for _ in range(10):
            command = rng.choice(env.admissible_commands)
            t = time.perf_counter()
            *_, term, trunc, _ = env.step(json.dumps({"thoughts": "", "action": command}))
            t_steps += time.perf_counter() - t
            steps += 1
            if term or trunc:
                break
    env.close()
    result = {
        "scene_generation_ms": 1e3 * statistics.mean(scene_s),
        "generation_plus_planner_check_s": statistics.mean(total_s),
        "expert_plan_length_mean": statistics.mean(plan_len),
        "reset_s": statistics.mean(resets),
        "reset_replayed_game_s": statistics.mean(replays),
        "steps_per_s_one_worker": steps / t_steps,
        "split_sizes": DEFAULT_SPLIT_SIZES,
        "task_types": list(TASK_TYPES),
        "cpu_count": os.cpu_count(),
    }
    if args.pool:
        from vldac_lightning.envs.factory import LanguageEnvThunk
        from vldac_lightning.envs.pool import EnvPool, train_seeds

        spec = {"id": "alfworld/AlfWorld-v0", "image_history": 4, "max_episode_steps": 50,
                "parse_failure": "penalty", "parse_failure_penalty": -1.0,
                "env_kwargs": {"source": "generated", "cache_dir": str(tmp / "games"),
                               "split_sizes": {"train": args.games}}}
        pool = EnvPool([LanguageEnvThunk(spec, "json")] * args.pool, mode="async", seeds=train_seeds(0, args.pool))
        pool.reset()
        look = json.dumps({"thoughts": "", "action": "look"})
        n = max(1, args.steps // args.pool)
        t = time.perf_counter()
        for _ in range(n):
            pool.step([look] * args.pool)
        result[f"pool{args.pool}_steps_per_s"] = n * args.pool / (time.perf_counter() - t)
        pool.close()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
