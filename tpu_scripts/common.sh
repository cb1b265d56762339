#!/usr/bin/env bash
# Shared by the tpu_scripts: flag checks, runtime versions, and the dry-run switch.
# Sourced, not run. Every gcloud call goes through `run`, which prints the exact command (shell
# quoted, one line) and runs it unless --dry-run was given.
# The variables set here are read by the scripts that source this file.
# shellcheck disable=SC2034

DRY_RUN=${DRY_RUN:-0}

die() {  # die MESSAGE: one line on stderr, exit 2 (bad usage)
  echo "$(basename "$0"): error: $*" >&2
  exit 2
}

require() {  # require FLAG VALUE: refuses an empty required flag, naming it
  [[ -n ${2:-} ]] || die "missing required flag $1 (see --help)"
}

squote() {  # squote ARG: ARG as one shell word (as is when safe, else in single quotes)
  if [[ $1 =~ ^(--[a-z-]+=)(.*[^A-Za-z0-9_./:=,@%+~-].*)$ ]]; then  # --flag='value'
    printf '%s' "${BASH_REMATCH[1]}"
    squote "${BASH_REMATCH[2]}"
  elif [[ $1 =~ ^[A-Za-z0-9_./:=,@%+~-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

run() {  # run CMD ARGS...: print (one line, copy-pastable), then execute unless dry-running
  local line="" arg
  for arg in "$@"; do
    line+="$(squote "$arg") "
  done
  echo "${line% }"
  if [[ $DRY_RUN == 1 ]]; then
    return 0
  fi
  "$@"
}

runtime_for() {  # runtime_for ACCELERATOR_TYPE: the TPU software version JAX uses on it
  case $1 in
    v6e-*) echo v2-alpha-tpuv6e ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v5litepod-* | v5e-*) echo v2-alpha-tpuv5-lite ;;
    v4-* | v3-* | v2-*) echo tpu-ubuntu2204-base ;;
    *) die "no default runtime version for accelerator type '$1': give --runtime-version" ;;
  esac
}

take_value() {  # take_value FLAG "$@": the value after FLAG (for "--flag value" forms)
  [[ $# -ge 2 && -n $2 && $2 != --* ]] || die "flag $1 needs a value"
  echo "$2"
}

ssh_all() {  # ssh_all COMMAND: run COMMAND on every worker of the slice (or on $WORKERS)
  run gcloud compute tpus tpu-vm ssh "$NAME" --project="$PROJECT" --zone="$ZONE" \
    --worker="${WORKERS:-all}" --command="$1"
}

NAME=${NAME:-} PROJECT=${PROJECT:-} ZONE=${ZONE:-}
common_flag() {  # common_flag "$@": takes --name/--project/--zone/--dry-run; sets SHIFT (0: not one)
  SHIFT=1
  local flag=${1%%=*} value
  case $1 in
    --name | --project | --zone) value=$(take_value "$@"); SHIFT=2 ;;
    --name=* | --project=* | --zone=*) value=${1#*=} ;;
    --dry-run) DRY_RUN=1; return 0 ;;
    *) SHIFT=0; return 0 ;;
  esac
  case $flag in
    --name) NAME=$value ;;
    --project) PROJECT=$value ;;
    --zone) ZONE=$value ;;
  esac
}

require_slice() {  # the three flags every script that talks to a slice needs
  require --name "$NAME"
  require --project "$PROJECT"
  require --zone "$ZONE"
}

SLICE_HELP='  --name NAME               the TPU VM (node) name
  --project PROJECT         the GCP project
  --zone ZONE               e.g. us-east5-a, europe-west4-b
  --dry-run                 print the gcloud commands, run nothing
  -h, --help                this text'
