#!/usr/bin/env bash
# One-call GPU check (one GPU, no network, < 8 min on an H100/H200):
#   1. engines          generation engines side by side (experiments/profile_decode.py): the tiny model
#                       in float32 (greedy identical?) and the 2B-shaped model in bf16 at batch 16, 48
#                       tokens: ms per decode step, its ratio to the bandwidth floor, π_old vs scoring
#   2. tiny_smoke       the tiny model's training smoke (debug=smoke) on the GPU
#   3. 2b_action_only   the 2B-shaped model's training smoke (experiment=gpu_qwen2vl_2b_shape), action-only responses
#   4. bench_rollout    rollout + generation throughput of that model, engines hf and static, N = 16, 64, 256 envs
#   5. 2b_json          the same training smoke with JSON responses (48 new tokens)
# The training smokes use the default engine (model/engine=static).
# Each stage has its own timeout (within an overall budget) and a failed stage does not stop the
# next. Everything goes to $OUT (or $GPU_CHECK_OUT, default logs/gpu_check): one JSON per stage,
# gpu_check.log (all output) and summary.json, whose content is also the last line printed.
#
#   bash experiments/gpu_check.sh                        # on the GPU machine
#   GPU_CHECK_SELFTEST=1 bash experiments/gpu_check.sh   # CPU, toy sizes: checks the script itself
#
# Needs python3 with a CUDA PyTorch, transformers, peft, lightning and our pure-Python dependencies
# (hydra-core, omegaconf, gymnasium; never mlflow: every run here uses logger=none).
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT_DIR=${OUT:-${GPU_CHECK_OUT:-logs/gpu_check}}
BUDGET_S=${GPU_CHECK_BUDGET_S:-450}
SELFTEST=${GPU_CHECK_SELFTEST:-0}
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")  # run folders (checkpoints) stay out of $OUT
LOG="$OUT_DIR/gpu_check.log"
STAGES="$SCRATCH/stages.tsv"
: >"$LOG"
: >"$STAGES"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
START=$(date +%s)
DEADLINE=$((START + BUDGET_S))

# The 2B-shaped model on the GPU, or (self-test) a toy model of the same code path on the CPU.
if [ "$SELFTEST" = 1 ]; then
  DEVICE=(trainer=cpu)
  BIG=(experiment=gpu_qwen2vl_2b_shape trainer=cpu model.dtype=float32 model.tiny.init_device=cpu
       model.tiny.hidden_size=64 model.tiny.intermediate_size=128 model.tiny.num_layers=2 model.tiny.num_heads=4
       model.tiny.vision_depth=1 model.tiny.vision_embed_dim=32 model.value_head.hidden_sizes=[32])
  BENCH=(--env-counts 2,4 --steps 8 --reps 1 --ref-steps 2 --gen-tokens 8 --device cpu debug=smoke)
  ENGINES=(--batch 2 --tokens 6 --reps 1)
else
  DEVICE=(trainer=gpu)
  BIG=(experiment=gpu_qwen2vl_2b_shape)
  BENCH=(--env-counts 16,64,256 --steps 256 --reps 2 --ref-steps 8 --gen-tokens 48 --device cuda)
  ENGINES=(--batch 16 --tokens 48 --reps 3)
fi
# debug=smoke plays its 4 evaluation episodes on 2 envs, in two rounds that each wait for their
# longest episode; on a GPU a batch of 4 costs what one of 2 does, so play them in one.
SMOKE=(debug=smoke logger=none env.eval_num_envs=4)

stage() {  # stage NAME LIMIT_S COMMAND... : run with a timeout inside the budget, record status + wall time
  local name=$1 limit=$2
  shift 2
  local left=$((DEADLINE - $(date +%s)))
  ((limit > left)) && limit=$left
  if ((limit < 15)); then
    echo "== $name: skipped (budget spent)" | tee -a "$LOG"
    printf '%s\tskipped\t0\t0\n' "$name" >>"$STAGES"
    return
  fi
  echo "== $name (limit ${limit}s): $*" | tee -a "$LOG"
  local t0 rc ms
  t0=$(date +%s%N)
  timeout --kill-after=10 "$limit" "$@" >>"$LOG" 2>&1
  rc=$?
  ms=$((($(date +%s%N) - t0) / 1000000))
  local status=ok
  ((rc == 124 || rc == 137)) && status=timeout
  ((rc != 0 && rc != 124 && rc != 137)) && status=failed
  printf '%s\t%s\t%s\t%d.%d\n' "$name" "$status" "$rc" $((ms / 1000)) $((ms % 1000 / 100)) >>"$STAGES"
  echo "== $name: $status (rc $rc)" | tee -a "$LOG"
  tail -n 3 "$LOG" | cut -c1-400
}

stage env 60 "$PY" -c "import torch, transformers, peft, lightning, hydra, gymnasium
print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')
print('transformers', transformers.__version__, 'peft', peft.__version__, 'lightning', lightning.__version__)"
stage engines_tiny 60 "$PY" experiments/profile_decode.py --experiment none --out "$OUT_DIR/engines_tiny.json" \
  "${ENGINES[@]}" model.sampling.max_new_tokens=24 "${DEVICE[@]}"
stage engines_2b 120 "$PY" experiments/profile_decode.py --out "$OUT_DIR/engines_2b.json" "${ENGINES[@]}" \
  "${BIG[@]}"
stage tiny_smoke 100 "$PY" experiments/train_timed.py --out "$OUT_DIR/tiny_smoke.json" --run-dir "$SCRATCH/tiny" \
  "${SMOKE[@]}" "${DEVICE[@]}"
stage 2b_action_only 150 "$PY" experiments/train_timed.py --out "$OUT_DIR/2b_action_only.json" --run-dir "$SCRATCH/ao" \
  "${BIG[@]}" "${SMOKE[@]}" model.response_mode=action_only
stage bench_rollout 220 "$PY" experiments/bench_rollout.py --no-rss --out "$OUT_DIR/bench_rollout.json" \
  "${BENCH[@]}" "${BIG[@]}"
stage 2b_json 120 "$PY" experiments/train_timed.py --out "$OUT_DIR/2b_json.json" --run-dir "$SCRATCH/json" \
  "${BIG[@]}" "${SMOKE[@]}" model.response_mode=json model.sampling.max_new_tokens=48

"$PY" experiments/gpu_check_summary.py --stages "$STAGES" --dir "$OUT_DIR" --total-s $(($(date +%s) - START)) \
  --selftest "$SELFTEST" >"$OUT_DIR/summary.json.tmp" 2>>"$LOG"
rc=$?
mv "$OUT_DIR/summary.json.tmp" "$OUT_DIR/summary.json"
rm -rf "$SCRATCH"
tail -n 1 "$OUT_DIR/summary.json"
exit $rc
