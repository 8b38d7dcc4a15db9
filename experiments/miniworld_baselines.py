"""Reference points for MiniWorld success rates: a uniformly random policy and the greedy oracle
(turn toward the box, walk; ignores walls), on the evaluation seeds training uses.

    python experiments/miniworld_baselines.py [--episodes 50] [--tasks OneRoom Hallway FourRooms WallGap]
        [--out experiments/results/miniworld_baselines.json]

Same episode rules as training (128 steps, −1 on an unrewarded end, image history 4, 80×60).
Seeds: ``eval_seeds(0, episodes)``, so the first 16 are the ones a ``seed=0`` run evaluates on.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from vldac_lightning.envs import eval_seeds, make_language_env


def play(task: str, policy: str, seeds: list[int]) -> dict:
    env = make_language_env(f"miniworld/{task}-v0", image_history=4, max_episode_steps=128,
                            response_mode="action_only", prompt_version="action_only")
    rng = np.random.default_rng(0)
    successes, returns, lengths = [], [], []
    try:
        for seed in seeds:
            env.reset(seed=seed)
            done = False
            while not done:
                text = env.oracle_text() if policy == "oracle" else env.action_names[rng.integers(4)]
                _, _, term, trunc, info = env.step(text)
                done = term or trunc
            successes.append(info["success"])
            returns.append(info["episode_return"])
            lengths.append(info["episode_length"])
    finally:
        env.close()
    return {"task": task, "policy": policy, "episodes": len(seeds), "success_rate": float(np.mean(successes)),
            "success_rate_first16": float(np.mean(successes[:16])), "mean_return": round(float(np.mean(returns)), 3),
            "mean_length": round(float(np.mean(lengths)), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--tasks", nargs="+", default=["OneRoom", "Hallway", "FourRooms", "WallGap"])
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    seeds = eval_seeds(0, args.episodes)
    rows = [play(task, policy, seeds) for task in args.tasks for policy in ("random", "oracle")]
    for r in rows:
        print(f"{r['task']:9s} {r['policy']:6s}: success {r['success_rate']:.2f} (first 16: "
              f"{r['success_rate_first16']:.2f}), return {r['mean_return']:+.2f}, length {r['mean_length']:.0f}")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
