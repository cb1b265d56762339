#!/usr/bin/env bash
# Create a Cloud TPU VM slice, directly or as a queued resource.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$HERE/common.sh"

usage() {
  cat <<'USAGE'
Usage: create.sh --name NAME --project PROJECT --zone ZONE --accelerator-type TYPE [options]

Creates a TPU VM slice (every host of a multi-host type such as v5p-64 comes up together).

Required: --name, --project, --zone (below) and
  --accelerator-type TYPE   e.g. v5litepod-8, v5p-64, v6e-16
Options:
  --runtime-version V       TPU software version (default: the one for TYPE:
                            v6e v2-alpha-tpuv6e, v5p v2-alpha-tpuv5, v5e v2-alpha-tpuv5-lite,
                            v4 and older tpu-ubuntu2204-base)
  --spot                    Spot capacity (preemptible, cheaper)
  --reserved                use the project's reservation
  --queued                  request it as a queued resource (waits for capacity; the usual
                            way to get large slices); the request is named NAME-qr
USAGE
  echo "$SLICE_HELP"
}

TYPE="" RUNTIME="" CAPACITY="" QUEUED=0
while [[ $# -gt 0 ]]; do
  common_flag "$@"
  if [[ $SHIFT -gt 0 ]]; then shift "$SHIFT"; continue; fi
  case $1 in
    --accelerator-type) TYPE=$(take_value "$@"); shift 2 ;;
    --accelerator-type=*) TYPE=${1#*=}; shift ;;
    --runtime-version) RUNTIME=$(take_value "$@"); shift 2 ;;
    --runtime-version=*) RUNTIME=${1#*=}; shift ;;
    --spot | --reserved)
      [[ -z $CAPACITY ]] || die "--spot and --reserved exclude each other"
      CAPACITY=$1; shift ;;
    --queued) QUEUED=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
require_slice
require --accelerator-type "$TYPE"
RUNTIME=${RUNTIME:-$(runtime_for "$TYPE")}
extra=()
[[ -n $CAPACITY ]] && extra+=("$CAPACITY")

if [[ $QUEUED == 1 ]]; then
  run gcloud compute tpus queued-resources create "$NAME-qr" --node-id="$NAME" \
    --project="$PROJECT" --zone="$ZONE" --accelerator-type="$TYPE" \
    --runtime-version="$RUNTIME" "${extra[@]}"
  echo "# queued: watch it with" >&2
  echo "#   gcloud compute tpus queued-resources describe $NAME-qr --project=$PROJECT --zone=$ZONE" >&2
else
  run gcloud compute tpus tpu-vm create "$NAME" --project="$PROJECT" --zone="$ZONE" \
    --accelerator-type="$TYPE" --version="$RUNTIME" "${extra[@]}"
fi
