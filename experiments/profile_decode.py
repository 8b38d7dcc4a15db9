"""Generation engines side by side on one model and one batch: speed, exactness, where time goes.

    python experiments/profile_decode.py [--batch 16] [--tokens 48] [--reps 3] [--engines hf,static]
                                         [--out FILE] [hydra overrides]

Defaults to the 2B-shaped model (``experiment=gpu_qwen2vl_2b_shape``) in JSON mode; ``--experiment
none`` takes the tiny float32 model (the exactness case: greedy rows must all be identical). Same model, same prompts (real env
observations), the adapter given random non-zero weights (a trained one is not zero). For each
engine (conf/model/engine/<name>.yaml):

* timing, device synchronised, median over ``--reps`` calls: prefill (a call for one token),
  ms per decode step ((full call − prefill) / (R − 1)), tokens/s;
* numerics: the recorded log π_old against a separate scoring forward of the same tokens (max
  and mean |Δ|), and the last-prompt hidden state against the scoring forward's;
* greedy agreement with the first engine: the fraction of batch rows whose greedy responses are
  identical token for token (1.0 in float32; in bf16 merged weights and fused kernels round
  differently, so long greedy continuations may part after a near tie).

Plus plain ``model.generate`` of the same LoRA model, and the floor: decoder weight bytes ÷ a
device copy bandwidth measured in this process. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--engines", default="hf,static")
    ap.add_argument("--experiment", default="gpu_qwen2vl_2b_shape",
                    help="experiment config to start from ('none': the default tiny model)")
    ap.add_argument("--out", default=None)
    args, overrides = ap.parse_known_args()
    from bench_rollout import (
        CONF_DIR,
        build_policy,
        compose,
        copy_bandwidth,
        decode_weight_bytes,
        generation_timing,
        sync,
    )
    from omegaconf import OmegaConf

    from vldac_lightning.data.datamodule import env_factory
    from vldac_lightning.models.engines import build_engine

    experiment = [] if args.experiment == "none" else [f"experiment={args.experiment}"]
    cfg = compose([*experiment, "model.response_mode=json",
                   f"model.sampling.max_new_tokens={args.tokens}", *overrides])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    policy = build_policy(cfg).to(device).eval()
    names = [n for n in args.engines.split(",") if n]
    engines = {n: build_engine(OmegaConf.load(CONF_DIR / "model" / "engine" / f"{n}.yaml")) for n in names}
    env = env_factory(cfg.env, "json")()
    observations = []
    for seed in range(args.batch):
        obs, _ = env.reset(seed=seed)
        observations.append({"images": obs["images"][: obs["num_images"]], "text": obs["text"]})
    env.close()
    enc = policy.encode(observations)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in policy.model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen).to(param) * 0.02)

    def plain_generate() -> None:
        policy.model.generate(**enc, do_sample=True, max_new_tokens=args.tokens, min_new_tokens=args.tokens,
                              pad_token_id=policy.pad_token_id)

    results: dict[str, Any] = {}
    greedy: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name in names:
            policy.engine = engines[name]
            generation_timing(policy, enc, device)  # warm-up: kernels, allocator, graph capture
            runs = [generation_timing(policy, enc, device) for _ in range(args.reps)]
            timing = {k: round(statistics.median(r[k] for r in runs), 3) for k in runs[0]}
            torch.manual_seed(1)
            response, mask, logp, hidden = policy.generate_scored(enc)
            scored, values = policy.score(enc, response, mask, with_values=True)
            diff = (logp - scored)[mask].abs().float()
            hidden_ref = policy.model(**enc, output_hidden_states=True, logits_to_keep=1,
                                      use_cache=False).hidden_states[-1][:, -1]
            greedy[name] = policy.generate(enc, do_sample=False)[0]
            results[name] = {**timing, "logp_vs_scoring": {"max_abs": round(float(diff.max()), 6),
                                                           "mean_abs": round(float(diff.mean()), 7),
                                                           "tokens": int(mask.sum())},
                             "hidden_vs_forward_max_abs": round(float((hidden - hidden_ref).abs().max()), 6)}
            print(name, results[name], flush=True)
        first = greedy[names[0]]
        for name in names[1:]:
            other = greedy[name]
            width = max(first.shape[1], other.shape[1])
            a, b = (torch.nn.functional.pad(t, (0, width - t.shape[1]), value=policy.pad_token_id)
                    for t in (first, other))
            same = (a == b).all(1).float().mean()
            results[name]["greedy_rows_identical_to_" + names[0]] = round(float(same), 3)
        plain_generate()
        seconds = []
        for _ in range(args.reps):
            sync(device)
            t0 = time.perf_counter()
            plain_generate()
            sync(device)
            seconds.append(time.perf_counter() - t0)
        results["plain_generate"] = {"call_ms": round(1000 * statistics.median(seconds), 1),
                                     "tokens_per_s": round(args.batch * args.tokens / statistics.median(seconds), 1)}
    bandwidth = copy_bandwidth(device, 2048 if device.type == "cuda" else 256)
    weight_bytes = decode_weight_bytes(policy)
    floor_ms = 1000 * weight_bytes / bandwidth
    for name in names:
        results[name]["floor_ratio"] = round(results[name]["ms_per_decode_step"] / floor_ms, 2)
    speedups = {f"{n}_vs_{names[0]}_decode_step": round(results[names[0]]["ms_per_decode_step"]
                                                          / results[n]["ms_per_decode_step"], 2) for n in names[1:]}
    out = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "dtype": str(cfg.model.dtype), "batch": args.batch, "tokens": args.tokens,
        "prompt_tokens": int(enc["input_ids"].shape[1]),
        "params_b": round(sum(p.numel() for p in policy.parameters()) / 1e9, 3),
        "engines": results, "speedups": speedups,
        "floor": {"decode_weight_bytes": weight_bytes, "copy_bandwidth_gb_s": round(bandwidth / 1e9, 1),
                  "floor_ms_per_decode_step": round(floor_ms, 4)},
        "sampling": dataclasses.asdict(policy.sampling),
    }
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
