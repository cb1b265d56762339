#!/usr/bin/env bash
# Delete a TPU VM slice (and its queued resource, if it came from one).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$HERE/common.sh"

usage() {
  cat <<'USAGE'
Usage: delete.sh --name NAME --project PROJECT --zone ZONE [--queued] [--yes]

Deletes the TPU VM NAME (billing stops), or with --queued its queued resource NAME-qr together
with the node. Fetch what you need first (fetch.sh): the VM's disk goes with it.

  --queued                  the slice was created with create.sh --queued
  --yes                     do not ask gcloud for confirmation
USAGE
  echo "$SLICE_HELP"
}

QUEUED=0 YES=()
while [[ $# -gt 0 ]]; do
  common_flag "$@"
  if [[ $SHIFT -gt 0 ]]; then shift "$SHIFT"; continue; fi
  case $1 in
    --queued) QUEUED=1; shift ;;
    --yes) YES=(--quiet); shift ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
require_slice
if [[ $QUEUED == 1 ]]; then
  run gcloud compute tpus queued-resources delete "$NAME-qr" --project="$PROJECT" --zone="$ZONE" \
    --force "${YES[@]}"
else
  run gcloud compute tpus tpu-vm delete "$NAME" --project="$PROJECT" --zone="$ZONE" "${YES[@]}"
fi
