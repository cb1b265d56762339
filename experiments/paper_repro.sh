#!/usr/bin/env bash
# The acceptance side of RESULTS.md: Table 1 and Figure 2 (four drafters), Figure 3 (depth:
# DSpark 1 and 2 layers, DFlash 2 and 5 layers), Figure 5 (threshold sweep), at CPU scale.
# Needs the feature cache and the three trained drafters of experiments/smollm2_drafters.sh.
# Each stage is skipped when its output exists, so a killed run resumes where it stopped.
#
#   bash experiments/paper_repro.sh && python experiments/paper_figures.py
#
# One evaluation setting for every drafter: the six bundled benchmarks (dspark_jax/benchmarks), LIMIT
# prompts each after the seeded shuffle, T = 1 (the paper's), MAX_NEW new tokens, batch 8,
# full 7-token proposals.
set -euo pipefail
LIMIT=${LIMIT:-8}
MAX_NEW=${MAX_NEW:-128}
OUT=${OUT:-results/table1}
DATA=${DATA:-data/smollm2_sharegpt_train.jsonl}
CACHE=${CACHE:-runs/smollm2_cache}
LOG=${LOG:-runs/paper_repro_times.txt}
mkdir -p runs "$OUT"

stage() {  # stage NAME OUTPUT COMMAND...: runs unless OUTPUT exists, logs the wall time
  local name=$1 output=$2 start
  shift 2
  if [[ -e $output ]]; then echo "$name: $output exists, skipped"; return; fi
  start=$(date +%s)
  "$@"
  echo "$name $(( $(date +%s) - start )) s" | tee -a "$LOG"
}

evaluate() {  # evaluate NAME DRAFTER
  stage "eval_$1" "$OUT/$1/eval.json" dspark-jax eval --drafter "$2" --limit "$LIMIT" \
    --temperature 1 --max-new-tokens "$MAX_NEW" --batch-size 8 --out "$OUT/$1" --no-progress
}

train() {  # train NAME OVERRIDES...: a SmolLM2 drafter at the budget of configs/smollm2_135m.py
  local name=$1
  shift
  stage "train_$name" "runs/smollm2_$name/drafter/model.safetensors" dspark-jax train \
    configs/smollm2_135m.py "$@" out_dir="runs/smollm2_$name" regenerated="$DATA" \
    feature_cache="$CACHE" --no-progress
}

evaluate dspark data/drafters/smollm2_135m_dspark
evaluate dflash runs/smollm2_dflash/drafter
evaluate eagle3 runs/smollm2_eagle3/drafter
evaluate ngram ngram
# Figure 3: depth. The 2-layer DSpark and DFlash above are the middle points.
train dspark_l1 drafter=dspark draft.num_layers=1
evaluate dspark_l1 runs/smollm2_dspark_l1/drafter
train dflash_l5 drafter=dflash draft.num_layers=5
evaluate dflash_l5 runs/smollm2_dflash_l5/drafter
# Figure 5, on the same prompts and setting.
stage threshold_sweep results/threshold_sweep/sweep.json python experiments/threshold_sweep.py \
  --drafter data/drafters/smollm2_135m_dspark \
  --benchmarks gsm8k math500 aime25 mbpp humaneval mt-bench --limit "$LIMIT" \
  --max-new-tokens "$MAX_NEW" --out results/threshold_sweep
