#!/usr/bin/env bash
# One prepared check for a machine with a GPU (or TPU): the forward against its matmul floor at
# batch 1..64, both Pallas kernels (ragged attention, flat-buffer verification) compiled for
# the device against their XLA references, and the MoE exchange through the real
# lax.ragged_all_to_all against one device. Everything lands in one folder (default
# results/gpu_check/), with the device and versions.
#
#   bash experiments/gpu_check.sh [OUT_DIR]
#
# It needs the project installed (`make install`) with a jax build for the device
# (e.g. `pip install -U "jax[cuda12]"`). It stops at the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-results/gpu_check}"
mkdir -p "$out"
python="${PYTHON:-python3}"

"$python" - <<'PY' | tee "$out/device.txt"
import jax
print("jax", jax.__version__, "backend", jax.default_backend(), "devices", jax.devices())
if jax.default_backend() == "cpu":
  raise SystemExit("no accelerator found: this check is for a GPU/TPU machine")
PY
"$python" experiments/bench_kernels.py --batch 1 8 32 64 --t 1 8 --capacity 1024 4096 \
  --requests 1 8 32 64 --out "$out/kernels.json" | tee "$out/kernels.log"
"$python" experiments/bench_forward.py --batch 1 8 32 64 --t 1 8 --drafter "" \
  --out "$out/forward.json" | tee "$out/forward.log"
"$python" experiments/check_ragged_exchange.py | tee "$out/ragged_exchange.json"
echo "gpu_check: results in $out"
