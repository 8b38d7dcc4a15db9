"""Plot a run's learning curve from MLflow: eval/success_rate (held-out) and rollout/success_rate.

    python experiments/learning_curve.py --run-name default_numberline \
        --out experiments/results/default_numberline.png

Reads the local SQLite store by default (or --tracking-uri / MLFLOW_TRACKING_URI); writes the
PNG and a JSON file with the same numbers next to it.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///logs/mlflow/mlflow.db"))
    ap.add_argument("--experiment", default="vldac_lightning")
    ap.add_argument("--run-name", default=None, help="newest run with this name (default: newest run)")
    ap.add_argument("--run-id", default=None)
    ap.add_argument("--out", default="experiments/results/learning_curve.png")
    ap.add_argument("--title", default=None)
    args = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=args.tracking_uri)
    run_id = args.run_id
    if run_id is None:
        exp = client.get_experiment_by_name(args.experiment)
        if exp is None:
            raise SystemExit(f"no experiment {args.experiment!r} at {args.tracking_uri}")
        filt = f"attributes.run_name = '{args.run_name}'" if args.run_name else ""
        runs = client.search_runs([exp.experiment_id], filter_string=filt, order_by=["attributes.start_time DESC"],
                                  max_results=1)
        if not runs:
            raise SystemExit(f"no run named {args.run_name!r} in {args.experiment!r}")
        run_id = runs[0].info.run_id
    series = {}
    for key in ("eval/success_rate", "rollout/success_rate", "eval/episode_return", "rollout/parse_failure_rate"):
        hist = sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
        series[key] = [(m.step, m.value, m.timestamp) for m in hist]
    if not series["eval/success_rate"]:
        raise SystemExit(f"run {run_id} has no eval/success_rate")
    t0 = min(ts for values in series.values() for _, _, ts in values)
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, style in (("eval/success_rate", "o-"), ("rollout/success_rate", ".-")):
        pts = series[key]
        if pts:
            ax.plot([s for s, _, _ in pts], [v for _, v, _ in pts], style, label=key, alpha=0.9 if "eval" in key else 0.4)
    ax.axhline(0.8, color="grey", ls="--", lw=1, label="target 0.8")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("success rate")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(args.title or f"run {run_id[:8]}")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    summary = {
        "run_id": run_id,
        "eval_success_rate": [{"env_steps": s, "value": v, "minutes": (ts - t0) / 60000} for s, v, ts in series["eval/success_rate"]],
        "rollout_success_rate": [{"env_steps": s, "value": v} for s, v, _ in series["rollout/success_rate"]],
    }
    out.with_suffix(".json").write_text(json.dumps(summary, indent=1))
    print(f"wrote {out} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
