#!/usr/bin/env bash
# The three SmolLM2-135M drafters of TRAINING.md, end to end: regenerate, cache, train, evaluate.
# Every stage resumes after a kill (rerun this script). Stage wall times go to $LOG.
#
#   bash experiments/smollm2_drafters.sh   # budget v3 of configs/smollm2_135m.py
#
# Data: the target's answers to the first LIMIT train prompts, then ShareGPT's own answers to
# the first DATASET_LIMIT (no generation: the soft labels come from the cache's target forward).
set -euo pipefail
LIMIT=${LIMIT:-512}
DATASET_LIMIT=${DATASET_LIMIT:-600}
DATA=${DATA:-data/smollm2_sharegpt_train.jsonl}
ANSWERS=${ANSWERS:-runs/smollm2_dataset_answers.jsonl}
CACHE=${CACHE:-runs/smollm2_cache_v3}
LOG=${LOG:-runs/smollm2_stage_times.txt}
mkdir -p runs

stage() {  # stage NAME COMMAND...: runs and logs the wall time
  local name=$1 start
  shift
  start=$(date +%s)
  "$@"
  echo "$name $(( $(date +%s) - start )) s" | tee -a "$LOG"
}

stage regenerate dspark-jax regenerate --model smollm2-135m --out "$DATA" --split train \
  --limit "$LIMIT" --max-new-tokens 256 --batch-size 16 --no-progress
# The draft vocabulary is counted over all 10k train answers (configs/smollm2_135m.py).
[[ -e runs/smollm2_sharegpt_dataset_answers.jsonl ]] || dspark-jax regenerate --answers dataset \
  --model smollm2-135m --out runs/smollm2_sharegpt_dataset_answers.jsonl --split train \
  --limit 10000 --max-new-tokens 256
[[ -e $ANSWERS ]] || stage dataset_answers dspark-jax regenerate --answers dataset \
  --model smollm2-135m --out "$ANSWERS" --split train --limit "$DATASET_LIMIT" --max-new-tokens 256
stage cache dspark-jax cache configs/smollm2_135m.py regenerated="$DATA,$ANSWERS" \
  feature_cache="$CACHE" --no-progress
# Each drafter is evaluated as soon as it is trained (rows accumulate in tau.json).
for drafter in dspark dflash eagle3; do
  stage "train_$drafter" dspark-jax train configs/smollm2_135m.py drafter=$drafter \
    regenerated="$DATA,$ANSWERS" feature_cache="$CACHE" --no-progress
  stage "eval_$drafter" python experiments/eval_holdout_tau.py \
    --drafter $drafter=runs/smollm2_$drafter/drafter --out results/smollm2_holdout_tau
done
