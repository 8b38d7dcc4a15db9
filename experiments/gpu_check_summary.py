"""The one-line summary of experiments/gpu_check.sh: stage status and wall time, throughput, memory.

    python experiments/gpu_check_summary.py --stages stages.tsv --dir OUT_DIR --total-s 312

Reads the stage table the script wrote (name, status, exit code, seconds) and each stage's JSON
(experiments/train_timed.py, experiments/bench_rollout.py); prints one JSON object. Exit status 0
only when every stage passed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

SMOKES = ("tiny_smoke", "2b_action_only", "2b_json")


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def smoke_summary(record: dict[str, Any]) -> dict[str, Any]:
    """The numbers of one timed training run worth a line: where its time went, its outcome."""
    m = record.get("metrics", {})
    return {
        "run_s": record.get("wall_s"),
        "startup_s": record.get("startup_s"),
        "seconds": record.get("seconds"),
        "ppo_update_s": record.get("ppo_update_s"),
        "decode_steps": record.get("decode_steps"),
        "ms_per_decode_step": record.get("ms_per_decode_step"),
        "peak_gpu_mem_gb": record.get("peak_gpu_mem_gb"),
        "eval_success_rate": m.get("eval/success_rate"),
        "eval_episode_length": m.get("eval/episode_length"),
    }


def engines_summary(record: dict[str, Any]) -> dict[str, Any]:
    """experiments/profile_decode.py: per engine, decode step, its floor ratio, and π_old exactness."""
    out: dict[str, Any] = {"batch": record.get("batch"), "dtype": record.get("dtype"),
                           "floor_ms": (record.get("floor") or {}).get("floor_ms_per_decode_step"),
                           "speedups": record.get("speedups")}
    for name, r in (record.get("engines") or {}).items():
        keep = ("ms_per_decode_step", "prefill_ms", "tokens_per_s", "floor_ratio", "logp_vs_scoring", "call_ms")
        out[name] = {k: v for k, v in r.items() if k in keep or k.startswith("greedy_rows_identical")}
    return out


def bench_summary(record: dict[str, Any]) -> dict[str, Any]:
    breakdown = record.get("breakdown") or {}
    return {
        "speedups": record.get("speedups"),
        "generation": {name: e.get("generation") for name, e in (record.get("engines") or {}).items()},
        "env_steps_per_s_by_engine": {name: e.get("ours_steps_per_s")
                                      for name, e in (record.get("engines") or {}).items()},
        "env_steps_per_s": record.get("ours_steps_per_s"),
        "tokens_per_s": record.get("ours_tokens_per_s"),
        "reference_steps_per_s": record.get("reference_steps_per_s"),
        "limit_steps_per_s": record.get("limit_steps_per_s"),
        "ppo_iteration_s": breakdown.get("iteration_total"),
        "peak_gpu_mem_gb": record.get("peak_gpu_mem_gb"),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stages", required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--total-s", type=float, required=True)
    ap.add_argument("--selftest", default="0")
    args = ap.parse_args()
    out_dir = Path(args.dir)
    stages: dict[str, dict[str, Any]] = {}
    for line in Path(args.stages).read_text().splitlines():
        name, status, rc, seconds = line.split("\t")
        stages[name] = {"status": status, "rc": int(rc), "wall_s": float(seconds)}
    device, peaks = None, []
    for name in SMOKES:
        record = read_json(out_dir / f"{name}.json")
        if name in stages and record is not None:
            stages[name].update(smoke_summary(record))
            device = device or record.get("device")
            if record.get("status") != "ok" and stages[name]["status"] == "ok":
                stages[name]["status"] = "failed"
            if record.get("error"):
                stages[name]["error"] = str(record["error"])[:300]
    for name in ("engines_tiny", "engines_2b"):
        record = read_json(out_dir / f"{name}.json")
        if name in stages and record is not None:
            stages[name].update(engines_summary(record))
            device = device or record.get("device")
    bench = read_json(out_dir / "bench_rollout.json")
    if "bench_rollout" in stages and bench is not None:
        stages["bench_rollout"].update(bench_summary(bench))
    for s in stages.values():
        if s.get("peak_gpu_mem_gb") is not None:
            peaks.append(s["peak_gpu_mem_gb"])
    passed = bool(stages) and all(s["status"] == "ok" for s in stages.values())
    summary = {
        "gpu_check": "pass" if passed else "fail",
        "selftest": args.selftest == "1",
        "device": device or (bench or {}).get("device"),
        "total_s": args.total_s,
        "peak_gpu_mem_gb": max(peaks) if peaks else None,
        "stages": stages,
    }
    print(json.dumps(summary, separators=(",", ":")))
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
