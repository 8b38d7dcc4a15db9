"""Compare VL-DAC, RL4VLM, LOOP, GRPO and GiGPO at equal env-step budgets (README "Comparing algorithms").

    python experiments/compare_algorithms.py                       # the plan in configs/compare_algorithms.yaml
    python experiments/compare_algorithms.py --settings numberline_text --algos vldac,grpo --seeds 0,1
    python experiments/compare_algorithms.py --ladder              # also the Fig. 4 ladder
    python experiments/compare_algorithms.py --pilot               # tiny budgets, checks the pipeline
    python experiments/compare_algorithms.py --report-only         # re-aggregate finished runs
    python experiments/compare_algorithms.py --paper               # the paper's regime: model=tiny_pretrained,
                                                                   # JSON with thoughts, RL4VLM λ 0.2/0.5/1.0

Each run is one ``python -m vldac_lightning.train`` process (``logger=csv``, ``torch_threads=1``),
``--jobs`` at a time. A finished run leaves ``result.json`` in its directory and is skipped on a
re-run, so an interrupted comparison continues. When all runs of a setting are done, the driver
writes ``<out>/<setting>.json`` (every curve and the summary), ``<setting>.png`` (held-out success vs
env steps, mean ± std over seeds, one line per algorithm) and ``<setting>.md`` (the table: final and
peak success, env steps to the target success, the critic's explained variance, minutes per run).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "experiments" / "configs" / "compare_algorithms.yaml"
PAPER_CONFIG = ROOT / "experiments" / "configs" / "compare_paper_regime.yaml"  # docs/pretraining.md


@dataclass(frozen=True)
class Job:
    group: str  # a setting name, or "ladder_<setting>"
    name: str  # the algorithm (or ladder rung)
    seed: int
    overrides: tuple[str, ...]
    run_dir: Path

    @property
    def label(self) -> str:
        return f"{self.group}/{self.name}/seed{self.seed}"


# ------------------------------------------------------------------------------------- plan
def plan(cfg: dict[str, Any], args: argparse.Namespace) -> list[Job]:
    """Every (setting, algorithm, seed) run, plus the ladder when asked."""
    out = Path(cfg["out"])
    common = [*cfg["common"], *cfg.get("common_extra", []),
              f"algo.total_env_steps={cfg['budget_env_steps']}",
              f"callbacks.evaluation.every_n_iterations={cfg['eval_every_iterations']}",
              f"callbacks.evaluation.num_episodes={cfg['eval_episodes']}"]
    settings = args.settings.split(",") if args.settings else list(cfg["settings"])
    algos = args.algos.split(",") if args.algos else list(cfg["algorithms"])
    for name in settings:
        if name not in cfg["settings"]:
            raise SystemExit(f"--settings: unknown {name!r}; choose from {list(cfg['settings'])}")
    for name in algos:
        if name not in cfg["algorithms"]:
            raise SystemExit(f"--algos: unknown {name!r}; choose from {list(cfg['algorithms'])}")

    def seeds_of(spec: dict[str, Any]) -> list[int]:
        if args.seeds:
            return [int(s) for s in args.seeds.split(",")]
        if args.pilot:  # the pilot's seeds win over a setting's own
            return [int(s) for s in cfg["seeds"]]
        return [int(s) for s in spec.get("seeds", cfg["seeds"])]

    jobs = []
    for setting in settings:
        spec = cfg["settings"][setting]
        for algo in algos:
            for seed in seeds_of(spec):
                overrides = (*common, *spec["overrides"], *cfg["algorithms"][algo], f"seed={seed}")
                jobs.append(Job(setting, algo, seed, overrides, out / "runs" / setting / algo / f"seed{seed}"))
    if args.ladder:
        ladder = cfg["ladder"]
        spec = cfg["settings"][ladder["setting"]]
        group = f"ladder_{ladder['setting']}"
        for rung, rung_overrides in ladder["rungs"].items():
            for seed in seeds_of(ladder):
                overrides = (*common, *spec["overrides"], *rung_overrides, f"seed={seed}")
                jobs.append(Job(group, rung, seed, overrides, out / "runs" / group / rung / f"seed{seed}"))
    return jobs


# ------------------------------------------------------------------------------------- running
def run_job(job: Job) -> dict[str, Any]:
    """Train one run (unless its result exists) and return its curves."""
    result_path = job.run_dir / "result.json"
    if result_path.exists():
        return json.loads(result_path.read_text())
    job.run_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "vldac_lightning.train", *job.overrides, f"hydra.run.dir={job.run_dir}",
           f"run_name=compare_{job.group}_{job.name}_seed{job.seed}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    start = time.perf_counter()
    with open(job.run_dir / "train.log", "w") as log:
        log.write(" ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{job.label} failed (exit {proc.returncode}); see {job.run_dir / 'train.log'}")
    result = {"group": job.group, "name": job.name, "seed": job.seed, "wall_s": round(wall, 1),
              "overrides": list(job.overrides), **read_metrics(job.run_dir / "csv" / "metrics.csv")}
    result_path.write_text(json.dumps(result, indent=1))
    print(f"done {job.label} in {wall / 60:.1f} min: final success {result['eval'][-1][1]:.2f}", flush=True)
    return result


def read_metrics(path: Path) -> dict[str, list[list[float]]]:
    """The (env steps, value) series the comparison needs, from a CSVLogger file."""
    series: dict[str, list[list[float]]] = {"eval": [], "rollout_success": [], "explained_variance": []}
    keys = {"eval/success_rate": "eval", "rollout/success_rate": "rollout_success",
            "train/explained_variance": "explained_variance"}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            for key, name in keys.items():
                if row.get(key) not in (None, ""):
                    series[name].append([int(float(row["step"])), float(row[key])])
    for name in series:
        series[name].sort()
    if not series["eval"]:
        raise RuntimeError(f"{path} holds no eval/success_rate")
    return series


# ------------------------------------------------------------------------------------- summary
def summarise(group: str, results: list[dict[str, Any]], cfg: dict[str, Any]) -> dict[str, Any]:
    """Mean ± std curves on a common env-step grid, and the table's numbers, per algorithm."""
    budget = int(cfg["budget_env_steps"])
    target = float(cfg["target_success"])
    names = list(dict.fromkeys(r["name"] for r in results))
    eval_points = sorted({s for r in results for s, _ in r["eval"]})
    grid = np.array([s for s in eval_points if s <= budget] + [budget])
    grid = np.unique(grid)
    out: dict[str, Any] = {"group": group, "budget_env_steps": budget, "grid": grid.tolist(), "algorithms": {}}
    for name in names:
        runs = sorted((r for r in results if r["name"] == name), key=lambda r: r["seed"])
        # Group methods' rollouts end on whole rounds, so their eval steps differ slightly: interpolate.
        curves = np.array([np.interp(grid, [s for s, _ in r["eval"]], [v for _, v in r["eval"]]) for r in runs])
        finals = [r["eval"][-1][1] for r in runs]
        peaks = [max(v for _, v in r["eval"]) for r in runs]
        reached = [next((s for s, v in r["eval"] if v >= target), None) for r in runs]
        ev = [float(np.mean([v for _, v in r["explained_variance"][-max(1, len(r["explained_variance"]) // 4):]]))
              for r in runs if r["explained_variance"]]
        out["algorithms"][name] = {
            "seeds": [r["seed"] for r in runs],
            "mean": curves.mean(0).round(4).tolist(), "std": curves.std(0).round(4).tolist(),
            "final": [float(np.mean(finals)), float(np.std(finals))],
            "peak": [float(np.mean(peaks)), float(np.std(peaks))],
            "steps_to_target": reached,
            "explained_variance_last_quarter": [float(np.mean(ev)), float(np.std(ev))] if ev else None,
            "minutes_per_run": float(np.mean([r["wall_s"] for r in runs]) / 60),
            "runs": runs,
        }
    out["cpu_minutes"] = round(sum(r["wall_s"] for r in results) / 60, 1)  # one thread per run
    return out


def table(summary: dict[str, Any], target: float) -> str:
    lines = [f"| algorithm | final success | peak success | env steps to {target} | explained variance "
             "(last quarter) | min/run |", "|---|---|---|---|---|---|"]
    for name, a in summary["algorithms"].items():
        hits = [s for s in a["steps_to_target"] if s is not None]
        to_target = f"{int(np.median(hits)):,} ({len(hits)}/{len(a['seeds'])} seeds)" if hits else \
            f"not reached (0/{len(a['seeds'])})"
        ev = a["explained_variance_last_quarter"]
        lines.append(f"| {name} | {a['final'][0]:.2f} ± {a['final'][1]:.2f} | {a['peak'][0]:.2f} ± {a['peak'][1]:.2f} "
                     f"| {to_target} | {f'{ev[0]:.2f} ± {ev[1]:.2f}' if ev else '— (no critic)'} "
                     f"| {a['minutes_per_run']:.1f} |")
    return "\n".join(lines) + "\n"


def plot(summary: dict[str, Any], path: Path, target: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.array(summary["grid"])
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, a in summary["algorithms"].items():
        mean, std = np.array(a["mean"]), np.array(a["std"])
        ax.plot(grid, mean, "o-", ms=3, label=f"{name} ({len(a['seeds'])} seeds)")
        ax.fill_between(grid, mean - std, mean + std, alpha=0.15)
    ax.axhline(target, color="grey", ls="--", lw=1)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("held-out success rate")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(summary["group"])
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(group: str, results: list[dict[str, Any]], cfg: dict[str, Any]) -> None:
    out = Path(cfg["out"])
    out.mkdir(parents=True, exist_ok=True)
    summary = summarise(group, results, cfg)
    (out / f"{group}.json").write_text(json.dumps(summary, indent=1))
    (out / f"{group}.md").write_text(f"# {group}\n\n{table(summary, float(cfg['target_success']))}\n"
                                     f"CPU time: {summary['cpu_minutes']} min (one thread per run).\n")
    plot(summary, out / f"{group}.png", float(cfg["target_success"]))
    print(f"wrote {out / group}.json/.png/.md\n{table(summary, float(cfg['target_success']))}", flush=True)


# ------------------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help=f"the plan (default: {DEFAULT_CONFIG.name}; --paper: {PAPER_CONFIG.name})")
    ap.add_argument("--paper", action="store_true", help="the paper-regime plan (pretrained tiny VLM, JSON answers)")
    ap.add_argument("--settings", help="comma-separated subset of the config's settings")
    ap.add_argument("--algos", help="comma-separated subset of the config's algorithms")
    ap.add_argument("--seeds", help="comma-separated seeds (default: the config's)")
    ap.add_argument("--ladder", action="store_true", help="also run the Fig. 4 ladder")
    ap.add_argument("--jobs", type=int, help="concurrent runs (default: the config's)")
    ap.add_argument("--budget", type=int, help="env steps per run (default: the config's)")
    ap.add_argument("--out", help="results folder (default: the config's)")
    ap.add_argument("--pilot", action="store_true", help="tiny budgets: check the pipeline end to end")
    ap.add_argument("--report-only", action="store_true", help="aggregate finished runs, train nothing")
    args = ap.parse_args()
    if args.paper and args.config:
        raise SystemExit("--paper selects the config; pass either --paper or --config, not both")
    cfg = yaml.safe_load(Path(args.config or (PAPER_CONFIG if args.paper else DEFAULT_CONFIG)).read_text())
    if args.pilot:
        cfg.update(cfg.pop("pilot"))
    cfg.pop("pilot", None)
    for key, value in (("jobs", args.jobs), ("budget_env_steps", args.budget), ("out", args.out)):
        if value is not None:
            cfg[key] = value
    jobs = plan(cfg, args)
    groups = list(dict.fromkeys(j.group for j in jobs))
    print(f"{len(jobs)} runs in {len(groups)} groups, {cfg['jobs']} at a time -> {cfg['out']}", flush=True)
    start = time.perf_counter()
    results: dict[str, list[dict[str, Any]]] = {g: [] for g in groups}
    remaining = {g: sum(j.group == g for j in jobs) for g in groups}
    failures = []
    if args.report_only:
        for job in jobs:
            path = job.run_dir / "result.json"
            if path.exists():
                results[job.group].append(json.loads(path.read_text()))
        for group in groups:
            if results[group]:
                report(group, results[group], cfg)
        return
    with ThreadPoolExecutor(max_workers=int(cfg["jobs"])) as pool:
        futures = {pool.submit(run_job, job): job for job in jobs}
        for future, job in futures.items():
            try:
                results[job.group].append(future.result())
            except RuntimeError as error:
                failures.append(str(error))
                print(error, flush=True)
            remaining[job.group] -= 1
            if remaining[job.group] == 0 and results[job.group]:
                report(job.group, results[job.group], cfg)  # commit each finished setting as you go
    print(f"total wall time {(time.perf_counter() - start) / 60:.1f} min", flush=True)
    if failures:
        raise SystemExit("failed runs:\n" + "\n".join(failures))


if __name__ == "__main__":
    main()
