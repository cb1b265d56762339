#!/usr/bin/env bash
# Copy results (a run folder, logs, a trained drafter) from a worker back to this machine.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$HERE/common.sh"

usage() {
  cat <<'USAGE'
Usage: fetch.sh --name NAME --project PROJECT --zone ZONE --path REMOTE [--to LOCAL] [--worker N]

Copies REMOTE (a file or folder on the worker, relative to ~/dspark-jax unless absolute or
starting with ~) to LOCAL (default: ./fetched/NAME/). Checkpoints and drafters are written by
process 0, so the default worker is 0. A gs:// REMOTE is copied with gsutil instead (no VM).

  --path REMOTE             what to copy, e.g. runs/qwen3_4b_dspark/drafter
  --to LOCAL                where to put it (created)
  --worker N                which worker to copy from (default 0)
USAGE
  echo "$SLICE_HELP"
}

REMOTE="" LOCAL="" WORKER=0
while [[ $# -gt 0 ]]; do
  common_flag "$@"
  if [[ $SHIFT -gt 0 ]]; then shift "$SHIFT"; continue; fi
  case $1 in
    --path) REMOTE=$(take_value "$@"); shift 2 ;;
    --path=*) REMOTE=${1#*=}; shift ;;
    --to) LOCAL=$(take_value "$@"); shift 2 ;;
    --to=*) LOCAL=${1#*=}; shift ;;
    --worker) WORKER=$(take_value "$@"); shift 2 ;;
    --worker=*) WORKER=${1#*=}; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
require --path "$REMOTE"
[[ $WORKER =~ ^[0-9]+$ ]] || die "--worker must be a worker number, got '$WORKER'"
if [[ $REMOTE == gs://* ]]; then
  LOCAL=${LOCAL:-fetched}
  [[ $DRY_RUN == 1 ]] || mkdir -p "$LOCAL"
  run gsutil -m cp -r "$REMOTE" "$LOCAL/"
  exit 0
fi
require_slice
LOCAL=${LOCAL:-fetched/$NAME}
# A relative path is under the checkout on the worker (~ expands there, not here).
# shellcheck disable=SC2088
[[ $REMOTE == /* || $REMOTE == \~* ]] || REMOTE="~/dspark-jax/$REMOTE"
[[ $DRY_RUN == 1 ]] || mkdir -p "$LOCAL"
run gcloud compute tpus tpu-vm scp --recurse "$NAME:$REMOTE" "$LOCAL/" --project="$PROJECT" \
  --zone="$ZONE" --worker="$WORKER"
