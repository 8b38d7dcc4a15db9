"""Where a decode step's time goes: our generate path against plain ``generate``, LoRA on and off.

    python experiments/profile_decode.py [--batch 4] [--tokens 48] [--reps 3] [--out FILE] [hydra overrides]

Same model, same prompts (real env observations), every variant timed over ``--reps`` calls with
the device synchronised, reported as milliseconds per decode step (a call's time over the tokens
it ran, prefill included):

* ``ours_scored``: ``VLMPolicy.generate_scored`` (rollout path: our logits processor records log π_old);
* ``ours``: ``VLMPolicy.generate`` (evaluation path);
* ``hf_lora``: plain ``model.generate`` of the same LoRA model, no processor of ours;
* ``hf_no_lora``: the same with the adapter disabled (what the LoRA layers cost per step);
* ``ours_prefill``: ``ours_scored`` for one new token (the prefill and per-call set-up alone);
* ``ours_merged``: ``ours_scored`` with ``model.merge_lora_for_generation`` (merge cost included).

The adapter gets random non-zero weights first (a trained one is not zero), and ``numerics``
compares, for both generation paths, the recorded log π_old with a separate unmerged scoring
forward of the same tokens (in bf16 the two differ by rounding even unmerged: cached decode vs
one full forward).

Then the Python functions that take the most time in one ``ours_scored`` call (cProfile, self
time), to show whose code a step spends its time in. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import io
import json
import pstats
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def timed(fn: Any, reps: int) -> tuple[float, int]:
    """Median seconds per call and the decode steps of the last call."""
    seconds, steps = [], 0
    for _ in range(reps):
        sync()
        t0 = time.perf_counter()
        steps = fn()
        sync()
        seconds.append(time.perf_counter() - t0)
    return statistics.median(seconds), steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", default=None)
    args, overrides = ap.parse_known_args()
    from bench_rollout import build_policy, compose

    from vldac_lightning.data.datamodule import env_factory

    cfg = compose(["experiment=gpu_qwen2vl_2b_shape", "model.response_mode=json",
                   f"model.sampling.max_new_tokens={args.tokens}", *overrides])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    policy = build_policy(cfg).to(device).eval()
    env = env_factory(cfg.env, "json")()
    observations = []
    for seed in range(args.batch):
        obs, _ = env.reset(seed=seed)
        observations.append({"images": obs["images"][: obs["num_images"]], "text": obs["text"]})
    env.close()
    enc = policy.encode(observations)
    P = enc["input_ids"].shape[1]
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a trained adapter is not zero: give it weights that change the outputs
        for name, param in policy.model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen).to(param) * 0.02)

    def ours_scored() -> int:
        return int(policy.generate_scored(enc)[0].shape[1])

    def ours() -> int:
        return int(policy.generate(enc)[0].shape[1])

    def hf() -> int:
        seqs = policy.model.generate(**enc, do_sample=True, max_new_tokens=args.tokens, pad_token_id=policy.pad_token_id)
        return int(seqs.shape[1] - P)

    def hf_no_lora() -> int:
        with policy.model.disable_adapter():
            return hf()

    def ours_prefill() -> int:  # one new token: the prefill and the per-call set-up alone
        full = policy.sampling
        policy.sampling = dataclasses.replace(full, max_new_tokens=1)
        try:
            return ours_scored()
        finally:
            policy.sampling = full

    def ours_merged() -> int:
        policy.merge_lora_for_generation = True
        try:
            return ours_scored()
        finally:
            policy.merge_lora_for_generation = False

    def recorded_vs_scored(merged: bool) -> dict[str, float]:
        policy.merge_lora_for_generation = merged
        torch.manual_seed(1)
        response, mask, logp, _ = policy.generate_scored(enc)
        policy.merge_lora_for_generation = False
        scored, _ = policy.score(enc, response, mask, with_values=False)
        diff = (logp - scored)[mask].abs().float()
        return {"max_abs": round(float(diff.max()), 5), "mean_abs": round(float(diff.mean()), 6),
                "tokens": int(mask.sum())}

    variants = {"ours_scored": ours_scored, "ours": ours, "hf_lora": hf, "hf_no_lora": hf_no_lora,
                "ours_prefill": ours_prefill, "ours_merged": ours_merged}
    with torch.no_grad():
        for fn in variants.values():  # warm-up: kernels, allocator
            fn()
        results = {}
        for name, fn in variants.items():
            seconds, steps = timed(fn, args.reps)
            results[name] = {"ms_per_call": round(1000 * seconds, 1), "decode_steps": steps,
                             "ms_per_decode_step": round(1000 * seconds / max(steps, 1), 2)}
            print(name, results[name], flush=True)
        numerics = {"unmerged": recorded_vs_scored(False), "merged": recorded_vs_scored(True)}
        print("recorded log π_old vs unmerged scoring:", numerics, flush=True)
        profiler = cProfile.Profile()
        profiler.enable()
        ours_scored()
        sync()
        profiler.disable()
    stream = io.StringIO()
    stats = pstats.Stats(profiler, stream=stream)
    stats.sort_stats("tottime").print_stats(15)
    print(stream.getvalue()[-6000:], flush=True)
    top = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:15]  # type: ignore[attr-defined]
    total = sum(v[2] for v in stats.stats.values())  # type: ignore[attr-defined]
    ours_self = sum(v[2] for k, v in stats.stats.items() if "vldac_lightning" in k[0])  # type: ignore[attr-defined]
    out = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "batch": args.batch, "tokens": args.tokens, "prompt_tokens": P,
        "params_b": round(sum(p.numel() for p in policy.parameters()) / 1e9, 3),
        "variants": results,
        "numerics_recorded_vs_scored": numerics,
        "cprofile_self_s_total": round(total, 3),
        "cprofile_self_s_vldac_lightning": round(ours_self, 4),
        "cprofile_top_self": [{"fn": f"{Path(k[0]).name}:{k[1]}({k[2]})", "calls": v[1], "self_s": round(v[2], 4)}
                              for k, v in top],
    }
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
