#!/usr/bin/env bash
# Run one dspark-jax command on every worker of a slice, as one multi-host JAX job.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$HERE/common.sh"

usage() {
  cat <<'USAGE'
Usage: launch.sh --name NAME --project PROJECT --zone ZONE [options] -- DSPARK_JAX_ARGS...

Runs `dspark-jax --distributed DSPARK_JAX_ARGS...` on every worker at once (--worker=all):
each process calls jax.distributed.initialize, which on a TPU VM finds the coordinator, the
process count and its own id from the slice's metadata, so all hosts form one device mesh.
The job runs in the background on the workers (nohup), so a dropped ssh does not kill it;
each worker's log is LOG_DIR/<job>/worker-<id>.log.

Options:
  --job NAME                job name for the log folder (default: the command and a timestamp)
  --log-dir DIR             a folder on the workers, or gs://bucket/path: logs are written
                            locally and copied there when the command ends (default ~/dspark-logs)
  --workdir DIR             where to run on the workers (default ~/dspark-jax)
  --env KEY=VALUE           an environment variable for the job (repeatable)
  --single-host             do not initialise jax.distributed (single-host slices, debugging)
  --worker N                run on worker N only (implies --single-host): the data jobs
                            (regenerate, cache, eval, profile) are not multi-host yet
  --foreground              wait for the command and stream its output instead
USAGE
  echo "$SLICE_HELP"
}

# Paths with ~ are expanded on the workers, not here.
# shellcheck disable=SC2088
JOB="" LOG_DIR="~/dspark-logs" WORKDIR="~/dspark-jax" SINGLE=0 FOREGROUND=0 ENVS=()
while [[ $# -gt 0 ]]; do
  common_flag "$@"
  if [[ $SHIFT -gt 0 ]]; then shift "$SHIFT"; continue; fi
  case $1 in
    --job) JOB=$(take_value "$@"); shift 2 ;;
    --log-dir) LOG_DIR=$(take_value "$@"); shift 2 ;;
    --workdir) WORKDIR=$(take_value "$@"); shift 2 ;;
    --env)
      value=$(take_value "$@")
      [[ $value == *=* ]] || die "--env needs KEY=VALUE, got '$value'"
      ENVS+=("$value"); shift 2 ;;
    --single-host) SINGLE=1; shift ;;
    --worker)
      WORKERS=$(take_value "$@")
      [[ $WORKERS =~ ^[0-9]+$ ]] || die "--worker must be a worker number, got '$WORKERS'"
      SINGLE=1; shift 2 ;;
    --foreground) FOREGROUND=1; shift ;;
    -h | --help) usage; exit 0 ;;
    --) shift; break ;;
    *) die "unknown argument '$1' (the dspark-jax command goes after --; see --help)" ;;
  esac
done
require_slice
[[ $# -gt 0 ]] || die "no dspark-jax command after -- (e.g. -- train configs/deepspec_qwen3.py size=4b)"
JOB=${JOB:-$1-$(date +%Y%m%d-%H%M%S)}

cmd=(dspark-jax)
[[ $SINGLE == 1 ]] || cmd+=(--distributed)
cmd+=("$@")
quoted=""
for arg in "${cmd[@]}"; do
  quoted+="$(squote "$arg") "
done
exports=""
for kv in "${ENVS[@]}"; do
  exports+="export $(squote "$kv"); "
done
# The worker id comes from the TPU VM's metadata server (agent-worker-number), on the worker.
# shellcheck disable=SC2016
worker='$(curl -s -H Metadata-Flavor:Google http://metadata.google.internal/computeMetadata/v1/instance/attributes/agent-worker-number)'
if [[ $LOG_DIR == gs://* ]]; then
  # shellcheck disable=SC2088
  local_logs="~/dspark-logs/$JOB"
  copy_back=" ; gsutil -m cp -r $local_logs $LOG_DIR/"
else
  local_logs="$LOG_DIR/$JOB"
  copy_back=""
fi
body="${exports}cd $WORKDIR && ${quoted% } > $local_logs/worker-$worker.log 2>&1$copy_back"
if [[ $FOREGROUND == 1 ]]; then
  ssh_all "mkdir -p $local_logs && ($body); cat $local_logs/worker-$worker.log"
else
  ssh_all "mkdir -p $local_logs && nohup bash -c $(squote "$body") > /dev/null 2>&1 &"
  echo "# started $JOB; follow worker 0 with" >&2
  echo "#   gcloud compute tpus tpu-vm ssh $NAME --project=$PROJECT --zone=$ZONE --worker=0 --command='tail -f $local_logs/worker-0.log'" >&2
fi
