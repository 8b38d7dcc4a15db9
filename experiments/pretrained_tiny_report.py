"""What ``model=tiny_pretrained`` brings to RL, measured (docs/pretraining.md#measured):

    python experiments/pretrained_tiny_report.py --out experiments/results/pretrained_tiny.json [--rl-start]

1. The pretraining report of the model (held-out describe exact match, JSON parse rate, action
   spread), read from the folder ``model=tiny_pretrained`` resolves to (built first if missing).
2. The uniform random policy's success per Gym-Cards env (``--episodes`` evaluation-seed episodes,
   a legal action drawn uniformly each step): what an unbiased pretrained model should start at.
3. ``--rl-start``: one short ``python -m vldac_lightning.train model=tiny_pretrained
   model.response_mode=json env=<env>`` per env (one 256-step rollout, ``torch_threads=1``): the
   first rollout's parse-failure rate and the held-out success before any update, i.e. the start
   of RL as training sees it. The commands are stored in the output.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ENVS = {"gym_cards/numberline": "gym_cards/NumberLine-v0", "gym_cards/ezpoints": "gym_cards/EZPoints-v0",
        "gym_cards/points24": "gym_cards/Points24-v0", "gym_cards/blackjack": "gym_cards/Blackjack-v0"}


def random_policy_success(env_id: str, episodes: int, max_steps: int = 20) -> dict[str, float]:
    """Success rate and mean return of uniformly random legal actions on evaluation seeds."""
    from vldac_lightning.data.pretrain_data import json_answer
    from vldac_lightning.envs.pool_data import eval_seeds
    from vldac_lightning.envs.registry import make_language_env

    env = make_language_env(env_id, prompt_version="rl4vlm", response_mode="json", max_episode_steps=max_steps)
    rng = np.random.default_rng(0)
    successes, returns = [], []
    try:
        for seed in eval_seeds(0, episodes):
            env.reset(seed=seed)
            done, info, total = False, {}, 0.0
            while not done:
                action = env.action_names[int(rng.integers(len(env.action_names)))]
                _, reward, terminated, truncated, info = env.step(json_answer("", action))
                total += reward
                done = terminated or truncated
            successes.append(bool(info["success"]))
            returns.append(total)
    finally:
        env.close()
    return {"success_rate": float(np.mean(successes)), "episode_return": float(np.mean(returns)), "episodes": episodes}


def rl_start(env_cfg: str, run_dir: Path, eval_episodes: int) -> dict[str, Any]:
    """One rollout + the initial evaluation of a real training run from the pretrained model."""
    cmd = [sys.executable, "-m", "vldac_lightning.train", "model=tiny_pretrained", "model.response_mode=json",
           f"env={env_cfg}", "torch_threads=1", "logger=csv", "algo.total_env_steps=256",
           f"callbacks.evaluation.num_episodes={eval_episodes}", "callbacks.model_checkpoint.every_n_iterations=1000",
           f"hydra.run.dir={run_dir}"]
    start = time.perf_counter()
    with open(run_dir.parent / f"{run_dir.name}.log", "w") as log:
        subprocess.run(cmd, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=log,
                       stderr=subprocess.STDOUT, check=True)
    rows = list(csv.DictReader(open(run_dir / "csv" / "metrics.csv", newline="")))

    def first(key: str) -> float | None:
        values = [(int(float(r["step"])), float(r[key])) for r in rows if r.get(key) not in (None, "")]
        return min(values)[1] if values else None

    parse_fail = first("rollout/parse_failure_rate")
    return {"command": " ".join(["python", *cmd[1:]]), "wall_s": round(time.perf_counter() - start, 1),
            "json_parse_rate": None if parse_fail is None else 1.0 - parse_fail,
            "initial_success_rate": first("eval/success_rate"), "first_rollout_success_rate": first("rollout/success_rate"),
            "invalid_action_rate": first("rollout/invalid_action_rate")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--model-path", help="a pretrained folder (default: the model=tiny_pretrained cache, built if missing)")
    ap.add_argument("--episodes", type=int, default=1000, help="random-policy episodes per env")
    ap.add_argument("--rl-start", action="store_true", help="also run one rollout of real training per env")
    ap.add_argument("--eval-episodes", type=int, default=100)
    ap.add_argument("--envs", default=",".join(ENVS), help="comma-separated env configs")
    args = ap.parse_args()

    from hydra import compose, initialize_config_dir

    from vldac_lightning.models.pretrained_tiny import DONE_FILE, ensure_pretrained

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train.yaml", overrides=["model=tiny_pretrained", "paths.root_dir=" + str(ROOT)]
                      + ([f"model.name_or_path={args.model_path}"] if args.model_path else []))
    path = ensure_pretrained(cfg.model)
    report = json.loads((path / DONE_FILE).read_text()) if (path / DONE_FILE).is_file() else {}
    out: dict[str, Any] = {"model_path": str(path), "pretraining": report, "envs": {}}
    run_root = Path("/tmp") / f"pretrained_tiny_report_{os.getpid()}"
    for env_cfg in args.envs.split(","):
        env_id = ENVS[env_cfg]
        entry: dict[str, Any] = {"random_policy": random_policy_success(env_id, args.episodes)}
        if args.rl_start:
            run_root.mkdir(parents=True, exist_ok=True)
            entry["rl_start"] = rl_start(env_cfg, run_root / env_cfg.split("/")[-1], args.eval_episodes)
        out["envs"][env_cfg] = entry
        print(env_cfg, json.dumps(entry), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
