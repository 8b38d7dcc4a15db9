"""Rollout throughput: a reference-style loop, our pooled rollout, and the generation limit.

    python experiments/bench_rollout.py [--reps 5] [--threads 1] [--env-counts 1,4,8,16] [--device auto]
                                        [hydra overrides: model=... env=...]
    nox -s bench

All in one process, on the same model and env (default: the tiny model on gym-cards NumberLine),
interleaved over ``--reps`` rounds, medians reported (ratios: the median of each round's ratio):

* ``reference``: the RL4VLM loop — one env, batch-1 ``generate``, then a separate forward for
  log-probs + value and another (adapter disabled) for the reference log-probs;
* ``ours``: :class:`RolloutCollector` over a pool of N = 1, 4, 8, 16 envs (the training path;
  ``--env-counts`` picks others, e.g. 16,64,256 on a GPU, where a decode step of batch 256 costs
  little more than one of batch 16);
* ``limit``: batched ``generate`` of recorded 16-env batches (the largest N when 16 is not swept), each run for as many tokens as it
  ran in the rollout, nothing else (no env, no parsing, no image processing, no value/reference passes).

Then one full PPO iteration at the config's own settings (rollout_steps, num_envs, PPO epochs,
minibatches), timed by component (``breakdown``), and the peak RSS of the learner and of each
worker of an async pool of 16. The last line printed is one JSON object (also written to
``experiments/results/bench_rollout.json``).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"
sys.path.insert(0, str(ROOT))

ENV_COUNTS = (1, 4, 8, 16)
BASE_N = 16  # the pool size the reference and the limit are compared with (when swept)


# ------------------------------------------------------------------------------------- setup
def compose(overrides: list[str]) -> DictConfig:
    """The training config with Hydra overrides (``model=...``, ``env=...``, ``key=value``)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose("train.yaml", overrides=["logger=none", *overrides])


def build_policy(cfg: DictConfig) -> Any:
    """The policy exactly as training builds it (``ActorCriticModule.configure_model``)."""
    from vldac_lightning.models.module import ActorCriticModule

    module = ActorCriticModule(cfg.model, cfg.algo, cfg.optimizer, optimizer_steps_per_iteration=1, num_iterations=1)
    module.configure_model()
    return module.policy


def make_pool(cfg: DictConfig, n: int, mode: str, base_seed: int = 0) -> Any:
    from vldac_lightning.data.datamodule import env_factory
    from vldac_lightning.envs.pool import EnvPool, train_seeds

    thunk = env_factory(cfg.env, str(cfg.model.response_mode))
    return EnvPool([thunk] * n, mode=mode, seeds=train_seeds(base_seed, n))


class Timers:
    """Accumulates wall seconds per component by wrapping methods of live objects."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._undo: list[Callable[[], None]] = []
        self._children: list[float] = []  # time of timed calls nested in the open ones (not counted twice)

    def wrap(self, obj: Any, name: str, key: str) -> None:
        original = getattr(obj, name)
        seconds, children = self.seconds, self._children

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            children.append(0.0)
            try:
                return original(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - t0
                seconds[key] += elapsed - children.pop()
                if children:
                    children[-1] += elapsed

        setattr(obj, name, timed)
        self._undo.append(lambda: obj.__dict__.pop(name, None))

    def model_forward(self, model: torch.nn.Module, key: str = "model_forward") -> None:
        """Time spent inside the backbone's ``forward`` (every prefill, decode step and scoring pass)."""
        start: list[float] = []
        seconds = self.seconds

        def pre(*_: Any) -> None:
            start.append(time.perf_counter())

        def post(*_: Any) -> None:
            seconds[key] += time.perf_counter() - start.pop()

        handles = [model.register_forward_pre_hook(pre), model.register_forward_hook(post)]
        self._undo.append(lambda: [h.remove() for h in handles])

    def remove(self) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()


# ------------------------------------------------------------------------------------- the three loops
@torch.no_grad()
def reference_loop(policy: Any, env: Any, steps: int, state: dict[str, Any]) -> float:
    """RL4VLM style: one env, batch-1 generate, separate log-prob/value and reference passes."""
    obs = state.get("obs")
    if obs is None:
        obs, _ = env.reset(seed=0)
    policy.eval()
    t0 = time.perf_counter()
    for _ in range(steps):
        item = {"images": obs["images"][: obs["num_images"]], "text": obs["text"]}
        enc = policy.encode([item])
        response, mask = policy.generate(enc)
        text = policy.decode(response, mask)[0]
        policy.score(enc, response, mask, with_values=True)
        policy.score(enc, response, mask, with_values=False, adapter=False)
        obs, _, terminated, truncated, _ = env.step(text)
        if terminated or truncated:
            obs, _ = env.reset()
    state["obs"] = obs
    return steps / (time.perf_counter() - t0)


def ours(collector: Any) -> tuple[float, float, Any]:
    """One rollout of the training collector; (env steps/s, generated tokens/s, the rollout)."""
    rollout, stats = collector.collect()
    m = stats.metrics()
    return m["rollout/env_steps_per_s"], m["rollout/tokens_per_s"], rollout


@torch.no_grad()
def limit_loop(policy: Any, encs: list[dict[str, torch.Tensor]], lengths: list[int]) -> tuple[float, float]:
    """Plain batched ``generate`` of recorded prompts, as many new tokens as each recorded batch ran, nothing else."""
    model = policy.model
    steps = tokens = 0
    t0 = time.perf_counter()
    for enc, length in zip(encs, lengths):
        seqs = model.generate(**enc, do_sample=True, max_new_tokens=length, min_new_tokens=length,
                              pad_token_id=policy.pad_token_id)
        steps += seqs.shape[0]
        tokens += seqs.shape[0] * (seqs.shape[1] - enc["input_ids"].shape[1])
    dt = time.perf_counter() - t0
    return steps / dt, tokens / dt


# ------------------------------------------------------------------------------------- one PPO iteration
def ppo_update(policy: Any, rollout: Any, cfg: DictConfig, optimizer: torch.optim.Optimizer,
               timers: Timers) -> None:
    """One iteration's update over ``rollout`` with the training code itself: the algorithm's targets
    and ``ActorCriticModule.minibatch_loss`` (re-scoring on the policy's device, the algorithm's
    loss), in update mode, as a post-warm-up iteration of ``training_step``; Lightning's manual
    optimisation is replaced by plain backward / clip / step."""
    from vldac_lightning.models.module import ActorCriticModule

    algo = cfg.algo
    module = ActorCriticModule(cfg.model, algo, cfg.optimizer, optimizer_steps_per_iteration=1, num_iterations=1)
    module.policy = policy  # the benchmark's policy, updated exactly as training updates it
    algorithm = module.algorithm
    t0 = time.perf_counter()
    targets = algorithm.targets(rollout)
    generator = torch.Generator().manual_seed(0)
    minibatches = [mb for _ in range(int(algo.ppo_epochs))
                   for mb in rollout.minibatches(targets.advantages, targets.returns, int(algo.minibatch_size),
                                                 generator)]
    timers.seconds["logging"] += time.perf_counter() - t0
    frozen = algorithm.policy_frozen(algorithm.warmup_updates)  # False: policy and critic both learn
    timers.wrap(module, "minibatch_loss", "update")  # re-scoring + loss; image processing is timed apart
    module.update_mode()
    accum = int(algo.grad_accum_steps)
    for i, mb in enumerate(minibatches):
        loss, _ = module.minibatch_loss(mb, policy_frozen=frozen)
        t1 = time.perf_counter()
        (loss / accum).backward()
        timers.seconds["model_backward"] += time.perf_counter() - t1
        if (i + 1) % accum == 0:
            torch.nn.utils.clip_grad_norm_(module.trainable_parameters(), float(algo.max_grad_norm))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        timers.seconds["update"] += time.perf_counter() - t1
    policy.eval()


def ppo_iteration(policy: Any, cfg: DictConfig) -> dict[str, float]:
    """Seconds of one PPO iteration (rollout + update) at the config's settings, by component."""
    from vldac_lightning.rollout.collector import RolloutCollector

    n = int(cfg.env.num_envs)
    steps_per_env = int(cfg.algo.rollout_steps) // n
    timers = Timers()
    optimizer = torch.optim.Adam([p for p in policy.parameters() if p.requires_grad], lr=1e-6,
                                 eps=float(cfg.optimizer.eps))
    with make_pool(cfg, n, str(cfg.env.pool_mode), base_seed=3) as pool:
        collector = RolloutCollector(pool, policy, steps_per_env)
        policy.set_action_names(pool.action_names)
        collector.reset()
        timers.wrap(pool, "step", "env_stepping")
        timers.wrap(policy, "encode", "image_processing")
        if hasattr(policy, "encode_steps"):
            timers.wrap(policy, "encode_steps", "image_processing")
        timers.wrap(policy, "generate", "generation")
        if hasattr(policy, "generate_scored"):
            timers.wrap(policy, "generate_scored", "generation")
        timers.wrap(policy, "score", "value_ref_logprobs")
        timers.wrap(policy, "_reference_logprobs", "value_ref_logprobs")
        timers.wrap(policy, "value", "value_ref_logprobs")
        timers.model_forward(policy.model.get_base_model())
        t0 = time.perf_counter()
        rollout, stats = collector.collect()
        rollout_s = time.perf_counter() - t0
        # score() is also the update's forward: time the rollout's share only.
        timers.remove()
        timers.wrap(policy, "encode", "image_processing")
        if hasattr(policy, "encode_steps"):
            timers.wrap(policy, "encode_steps", "image_processing")
        timers.model_forward(policy.model.get_base_model())
        t1 = time.perf_counter()
        stats.metrics()
        timers.seconds["logging"] += time.perf_counter() - t1
        ppo_update(policy, rollout, cfg, optimizer, timers)
        update_s = time.perf_counter() - t1
        timers.remove()
    s = timers.seconds
    total = rollout_s + update_s
    out = {k: round(s[k], 3) for k in ("env_stepping", "image_processing", "generation", "value_ref_logprobs",
                                       "update", "logging")}
    out["rollout_total"] = round(rollout_s, 3)
    out["iteration_total"] = round(total, 3)
    out["other"] = round(total - sum(s[k] for k in ("env_stepping", "image_processing", "generation",
                                                      "value_ref_logprobs", "update", "logging")), 3)
    out["model_forward_backward"] = round(s["model_forward"] + s["model_backward"], 3)
    out["model_fraction"] = round((s["model_forward"] + s["model_backward"]) / total, 3)
    out["env_steps"] = int(rollout.num_steps)
    out["minibatches"] = int(cfg.algo.ppo_epochs) * (int(cfg.algo.rollout_steps) // int(cfg.algo.minibatch_size))
    return out


# ------------------------------------------------------------------------------------- memory
def vm_hwm_mb(pid: int | str = "self") -> float:
    """Peak resident set size (VmHWM) of a process in MiB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status")


def peak_rss(policy: Any, cfg: DictConfig, n: int = 16, steps: int = 4) -> dict[str, Any]:
    """Peak RSS of each worker of an async pool of ``n`` envs after a short rollout, and of the learner."""
    from vldac_lightning.rollout.collector import RolloutCollector

    with make_pool(cfg, n, "async", base_seed=5) as pool:
        collector = RolloutCollector(pool, policy, steps)
        policy.set_action_names(pool.action_names)
        collector.collect()
        workers = [vm_hwm_mb(pid) for pid in pool.pids]
    return {
        "learner_mb": round(max(vm_hwm_mb(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024), 1),
        "worker_mb_median": round(statistics.median(workers), 1),
        "worker_mb_max": round(max(workers), 1),
        "workers": len(workers),
    }


# ------------------------------------------------------------------------------------- engines
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def copy_bandwidth(device: torch.device, mbytes: int) -> float:
    """Bytes per second a device-to-device copy moves (read + written), measured here and now."""
    src = torch.empty(mbytes * 2**20, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = float("inf")
    for _ in range(5):
        sync(device)
        t0 = time.perf_counter()
        dst.copy_(src)
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * src.numel() / best


def decode_weight_bytes(policy: Any) -> int:
    """Bytes one decode step must read at least: the text decoder's weights and the LM head (the
    token embedding only through the head when tied; a lookup reads B rows)."""
    from vldac_lightning.models.engines.qwen2_decoder import language_model

    base = policy.model.get_base_model()
    lm = language_model(base)
    seen, total = set(), 0
    params = [p for n, p in lm.named_parameters() if "embed_tokens" not in n and "lora_" not in n]
    for p in [*params, base.get_output_embeddings().weight]:
        if p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            total += p.numel() * p.element_size()
    return total


def generation_timing(policy: Any, enc: dict[str, torch.Tensor], device: torch.device) -> dict[str, float]:
    """One generation call of the policy's engine, split into prefill and decode steps.

    Prefill: a call for one new token (prompt encoding into the cache, the first token); a decode
    step: (full call − prefill call) / (R − 1), R the tokens the full call produced.
    """
    import dataclasses

    full = policy.sampling
    trie, policy.trie = policy.trie, None  # decode to the length budget, not the action trie's
    try:
        policy.sampling = dataclasses.replace(full, max_new_tokens=1)
        sync(device)
        t0 = time.perf_counter()
        policy.generate_scored(enc)
        sync(device)
        prefill_s = time.perf_counter() - t0
        policy.sampling = full
        t0 = time.perf_counter()
        response = policy.generate_scored(enc)[0]
        sync(device)
        total_s = time.perf_counter() - t0
    finally:
        policy.sampling, policy.trie = full, trie
    R = int(response.shape[1])
    B = int(response.shape[0])
    return {"prefill_ms": 1000 * prefill_s, "call_ms": 1000 * total_s, "tokens": R,
            "ms_per_decode_step": 1000 * (total_s - prefill_s) / max(R - 1, 1),
            "tokens_per_s": B * R / total_s}


# ------------------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=5, help="interleaved rounds (medians are reported)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on 2 busy cores)")
    ap.add_argument("--steps", type=int, default=64, help="env steps per measurement (per N and for the reference)")
    ap.add_argument("--ref-steps", type=int, default=None, help="reference-loop steps per round (default steps/4)")
    ap.add_argument("--env-counts", default=",".join(map(str, ENV_COUNTS)),
                    help="pool sizes N to measure, comma-separated (e.g. 16,64,256 on a GPU)")
    ap.add_argument("--engine", default="hf,static",
                    help="generation engines to compare side by side (conf/model/engine/<name>.yaml); the last "
                         "one also runs the PPO-iteration breakdown")
    ap.add_argument("--gen-tokens", type=int, default=48,
                    help="new tokens per call in the generation timing (JSON-mode length budget)")
    ap.add_argument("--device", default="auto", help="auto (cuda when available), cpu or cuda")
    ap.add_argument("--out", default=str(ROOT / "experiments" / "results" / "bench_rollout.json"))
    ap.add_argument("--no-rss", action="store_true", help="skip the async-pool memory measurement")
    ap.add_argument("--no-breakdown", action="store_true", help="skip the PPO-iteration breakdown")
    args, overrides = ap.parse_known_args()
    counts = sorted({int(n) for n in args.env_counts.split(",")})
    if not counts or counts[0] < 1:
        raise SystemExit(f"--env-counts={args.env_counts!r}: give positive pool sizes, e.g. 1,4,8,16")
    names = [e for e in args.engine.split(",") if e]
    base_n = BASE_N if BASE_N in counts else counts[-1]
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else "cpu" if args.device == "auto" else args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    t_start = time.perf_counter()
    cfg = compose(overrides)
    from omegaconf import OmegaConf

    from vldac_lightning.models.engines import build_engine
    from vldac_lightning.rollout.collector import RolloutCollector

    policy = build_policy(cfg).to(device)
    engines = {}
    for name in names:
        engine_cfg = OmegaConf.load(CONF_DIR / "model" / "engine" / f"{name}.yaml")
        engines[name] = build_engine(engine_cfg)
        if hasattr(engines[name], "max_sessions"):
            # Keep every shape this benchmark uses ready (rollout and timing batches of each N):
            # training uses few shapes, and a recapture would be timed here as if it were a step.
            engines[name].max_sessions = 64
    with torch.no_grad():  # a trained adapter is not zero: weights that change the outputs (as in training)
        gen = torch.Generator().manual_seed(0)
        for pname, param in policy.model.named_parameters():
            if "lora_B" in pname:
                param.copy_(torch.randn(param.shape, generator=gen).to(param) * 0.02)
    mode = str(cfg.model.response_mode)
    pools = {n: make_pool(cfg, n, str(cfg.env.pool_mode), base_seed=n) for n in counts}
    collectors = {}
    for n, pool in pools.items():
        policy.set_action_names(pool.action_names)
        collectors[n] = RolloutCollector(pool, policy, max(1, args.steps // n))
        collectors[n].reset()
    from vldac_lightning.data.datamodule import env_factory

    ref_env = env_factory(cfg.env, str(cfg.model.response_mode))()
    ref_state: dict[str, Any] = {}
    policy.engine = engines[names[0]]
    reference_loop(policy, ref_env, 4, ref_state)
    _, _, warm = ours(collectors[base_n])
    obs_batches = [[s.obs for s in warm.steps[i:i + base_n]] for i in range(0, len(warm.steps), base_n)]
    limit_encs = [policy.encode(b) for b in obs_batches]
    # A batched generate runs until its longest response ends: replay each recorded batch's length.
    lengths = [int(m.sum(1).max()) for m in warm.response_mask.split(base_n)]
    length = int(warm.response_mask.sum(1).float().median().item())
    limit_loop(policy, limit_encs[:1], lengths[:1])
    # Prompts for the generation timing: N observations from each pool (the pools' current ones).
    gen_encs = {n: policy.encode(collectors[n].obs) for n in counts}
    import dataclasses

    gen_sampling = dataclasses.replace(policy.sampling, max_new_tokens=args.gen_tokens)
    for name in names:  # warm-up per engine and batch shape (allocator, kernels, graph capture)
        policy.engine = engines[name]
        for n in counts:
            ours(collectors[n])
            saved, policy.sampling = policy.sampling, gen_sampling
            generation_timing(policy, gen_encs[n], device)
            policy.sampling = saved

    results: dict[str, list[float]] = defaultdict(list)
    ref_steps = args.ref_steps if args.ref_steps is not None else max(1, args.steps // 4)
    for rep in range(args.reps):
        policy.engine = engines[names[0]]
        results["reference"].append(reference_loop(policy, ref_env, ref_steps, ref_state))
        for name in names:
            policy.engine = engines[name]
            for n in counts:
                sps, tps, _ = ours(collectors[n])
                results[f"{name}/ours{n}"].append(sps)
                results[f"{name}/tokens{n}"].append(tps)
                saved, policy.sampling = policy.sampling, gen_sampling
                timing = generation_timing(policy, gen_encs[n], device)
                policy.sampling = saved
                for key, value in timing.items():
                    results[f"{name}/gen{n}/{key}"].append(value)
        sps, tps = limit_loop(policy, limit_encs, lengths)
        results["limit"].append(sps)
        results["limit_tokens"].append(tps)
        print(f"round {rep + 1}/{args.reps}: " + ", ".join(
            f"{k}={v[-1]:.1f}" for k, v in results.items() if "/gen" not in k or k.endswith(("ms_per_decode_step",
                                                                                              "tokens_per_s"))),
              flush=True)
    for pool in pools.values():
        pool.close()
    ref_env.close()

    med = {k: statistics.median(v) for k, v in results.items()}
    bandwidth = copy_bandwidth(device, 2048 if device.type == "cuda" else 256)
    weight_bytes = decode_weight_bytes(policy)
    floor_ms = 1000 * weight_bytes / bandwidth
    per_engine: dict[str, Any] = {}
    for name in names:
        ours_base = results[f"{name}/ours{base_n}"]
        ratios = {k: [a / b for a, b in zip(ours_base, results[k])] for k in ("reference", "limit")}
        gen_table = {}
        for n in counts:
            g = {key: round(med[f"{name}/gen{n}/{key}"], 3) for key in
                 ("prefill_ms", "call_ms", "ms_per_decode_step", "tokens_per_s", "tokens")}
            g["floor_ratio"] = round(g["ms_per_decode_step"] / floor_ms, 2)
            gen_table[str(n)] = g
        per_engine[name] = {
            "ours_steps_per_s": {str(n): round(med[f"{name}/ours{n}"], 2) for n in counts},
            "ours_tokens_per_s": {str(n): round(med[f"{name}/tokens{n}"], 1) for n in counts},
            f"ratio_ours{base_n}_reference": round(statistics.median(ratios["reference"]), 2),
            f"ratio_ours{base_n}_limit": round(statistics.median(ratios["limit"]), 3),
            "generation": gen_table,
        }
    # Speed-ups of each engine over the first, per round (side by side), medians.
    speedups = {}
    for name in names[1:]:
        for n in counts:
            a = results[f"{name}/gen{n}/tokens_per_s"]
            b = results[f"{names[0]}/gen{n}/tokens_per_s"]
            speedups[f"{name}_vs_{names[0]}_gen_tokens_per_s_N{n}"] = round(statistics.median(
                [x / y for x, y in zip(a, b)]), 2)
            a = results[f"{name}/ours{n}"]
            b = results[f"{names[0]}/ours{n}"]
            speedups[f"{name}_vs_{names[0]}_env_steps_per_s_N{n}"] = round(statistics.median(
                [x / y for x, y in zip(a, b)]), 2)
    print(json.dumps({"engines": per_engine, "speedups": speedups}, indent=1), flush=True)
    policy.engine = engines[names[-1]]
    breakdown = None if args.no_breakdown else ppo_iteration(policy, cfg)
    if breakdown:
        print(f"one PPO iteration ({names[-1]}): {breakdown}", flush=True)
    memory = None if args.no_rss else peak_rss(policy, cfg)
    if memory:
        print(f"peak RSS (async pool of 16): {memory}", flush=True)
    last = per_engine[names[-1]]
    out = {
        "model": str(cfg.model.source if cfg.model.source == "tiny" else cfg.model.name_or_path),
        "env": str(cfg.env.id),
        "response_mode": mode,
        "pool_mode": str(cfg.env.pool_mode),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "reps": args.reps,
        "torch_threads": args.threads,
        "response_tokens": length,
        "gen_tokens": args.gen_tokens,
        "engines_compared": names,
        "reference_steps_per_s": round(med["reference"], 2),
        # The last engine's numbers under the keys earlier versions of this file wrote.
        "ours_steps_per_s": last["ours_steps_per_s"],
        "ours_tokens_per_s": last["ours_tokens_per_s"],
        "limit_steps_per_s": round(med["limit"], 2),
        "tokens_per_s": last["ours_tokens_per_s"][str(base_n)],
        "limit_tokens_per_s": round(med["limit_tokens"], 1),
        f"ratio_ours{base_n}_reference": last[f"ratio_ours{base_n}_reference"],
        f"ratio_ours{base_n}_limit": last[f"ratio_ours{base_n}_limit"],
        "engines": per_engine,
        "speedups": speedups,
        "floor": {"decode_weight_bytes": weight_bytes, "copy_bandwidth_gb_s": round(bandwidth / 1e9, 1),
                  "floor_ms_per_decode_step": round(floor_ms, 4)},
        "breakdown": breakdown,
        "peak_rss_mb": memory,
        "peak_gpu_mem_gb": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None,
        "wall_s": round(time.perf_counter() - t_start, 1),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
