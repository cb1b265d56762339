#!/usr/bin/env bash
# The common jobs as launch.sh calls: regenerate, cache, train, eval, profile, serve.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$HERE/common.sh"

usage() {
  cat <<'USAGE'
Usage: recipe.sh RECIPE --name NAME --project PROJECT --zone ZONE [recipe options] [launch options]

Recipes (a DeepSpec-size run on a Qwen3 target, configs/deepspec_qwen3.py):
  regenerate   the target answers the ShareGPT train prompts    -> data/<size>_answers.jsonl
  cache        the target-feature cache of those answers        -> runs/<size>_cache
  train        a drafter on the cache (resumes from checkpoints) -> runs/<size>_<drafter>/drafter
  eval         acceptance on the bundled benchmarks              -> results/<size>_<drafter>
  profile      the cost profile the schedulers read              -> results/<size>_profile.json
  serve        dspark-jax serve (OpenAI API) with the trained drafter on worker 0, --port
`train` runs on all workers as one multi-host job; the data recipes and serve run on worker 0
alone (they are not multi-host yet), through launch.sh. Reach the server through an SSH tunnel:
gcloud compute tpus tpu-vm ssh NAME --worker=0 -- -L 8000:localhost:PORT

Recipe options:
  --target PATH             the target: an HF folder on the workers (required)
  --size SIZE               4b, 8b or 14b: the config's drafter size (default 4b)
  --drafter KIND            dspark, dflash or eagle3 (default dspark)
  --limit N                 regenerate: first N prompts (default: all)
  --port N                  serve: the server's port on worker 0 (default 8000)
  --slots N                 serve: requests decoded at once (default 32)
Other flags (--job, --log-dir, --env, --foreground, --single-host) go to launch.sh.
USAGE
  echo "$SLICE_HELP"
}

RECIPE="" TARGET="" SIZE=4b DRAFTER=dspark LIMIT="" PORT=8000 SLOTS=32 PASS=()
while [[ $# -gt 0 ]]; do
  case $1 in
    regenerate | cache | train | eval | profile | serve)
      [[ -z $RECIPE ]] || die "one recipe at a time (got $RECIPE and $1)"
      RECIPE=$1; shift ;;
    --target) TARGET=$(take_value "$@"); shift 2 ;;
    --size) SIZE=$(take_value "$@"); shift 2 ;;
    --drafter) DRAFTER=$(take_value "$@"); shift 2 ;;
    --limit) LIMIT=$(take_value "$@"); shift 2 ;;
    --port) PORT=$(take_value "$@"); shift 2 ;;
    --slots) SLOTS=$(take_value "$@"); shift 2 ;;
    --dry-run | --single-host | --foreground) PASS+=("$1"); shift ;;
    --name | --project | --zone | --job | --log-dir | --workdir | --env)
      PASS+=("$1" "$(take_value "$@")"); shift 2 ;;
    -h | --help) usage; exit 0 ;;
    -*) die "unknown argument '$1' (see --help)" ;;
    *) die "unknown recipe '$1' (regenerate, cache, train, eval, profile, serve)" ;;
  esac
done
[[ -n $RECIPE ]] || die "missing required recipe name (regenerate, cache, train, eval, profile, serve)"
[[ $PORT =~ ^[0-9]+$ && $SLOTS =~ ^[0-9]+$ ]] || die "--port and --slots must be numbers"
require --target "$TARGET"
[[ $SIZE =~ ^(4b|8b|14b)$ ]] || die "--size must be 4b, 8b or 14b, got '$SIZE'"
[[ $DRAFTER =~ ^(dspark|dflash|eagle3)$ ]] || die "--drafter must be dspark, dflash or eagle3"

ANSWERS="data/qwen3_${SIZE}_answers.jsonl"
CACHE="runs/qwen3_${SIZE}_cache"
RUN="runs/qwen3_${SIZE}_${DRAFTER}"
CONFIG=(configs/deepspec_qwen3.py "size=$SIZE" "drafter=$DRAFTER" "target=$TARGET"
  "regenerated=$ANSWERS" "feature_cache=$CACHE" "out_dir=$RUN")
WHERE=(--worker 0)
case $RECIPE in
  regenerate)
    job=(regenerate --model "$TARGET" --out "$ANSWERS" --split train --batch-size 64 --no-progress)
    [[ -z $LIMIT ]] || job+=(--limit "$LIMIT") ;;
  cache) job=(cache "${CONFIG[@]}" --no-progress) ;;
  train) job=(train "${CONFIG[@]}" --no-progress); WHERE=() ;;
  eval)
    job=(eval --model "$TARGET" --drafter "$RUN/drafter" --out "results/qwen3_${SIZE}_${DRAFTER}"
      --no-progress) ;;
  profile)
    job=(profile --model "$TARGET" --drafter-path "$RUN/drafter" --batch 1 8 32
      --out "results/qwen3_${SIZE}_profile.json") ;;
  serve)
    job=(serve --model "$TARGET" --drafter-path "$RUN/drafter" --slots "$SLOTS"
      --host 0.0.0.0 --port "$PORT") ;;
esac
# The recipe's defaults first, so the caller's flags (a --job name, say) override them.
exec bash "$HERE/launch.sh" --job "$RECIPE-$SIZE-$DRAFTER" "${WHERE[@]}" "${PASS[@]}" -- "${job[@]}"
