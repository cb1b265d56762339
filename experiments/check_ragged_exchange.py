"""On a GPU/TPU machine: expert parallelism through the real `jax.lax.ragged_all_to_all`
against the single-device expert computation (XLA:CPU lacks the primitive, so CPU tests cover
the exchange's bookkeeping only through an emulation). Uses every local device as the expert
axis (one device still runs the primitive). Prints one JSON line; exits 1 on a mismatch.

    python experiments/check_ragged_exchange.py
"""

from __future__ import annotations

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

from dspark_jax import sharding
from dspark_jax.models import moe
from dspark_jax.models.moe_parallel import exchange_kind, routed_experts_sharded


def main() -> int:
  jax.config.update("jax_default_matmul_precision", "highest")
  if jax.default_backend() == "cpu":
    print("check_ragged_exchange: XLA:CPU has no ragged-all-to-all; run this on a GPU/TPU")
    return 2
  p = jax.device_count()
  rng = np.random.default_rng(0)
  n, d, e, k, i = 64 * p, 128, 8 * p, 2, 64
  x = jnp.asarray(rng.normal(size=(n, d)), jnp.float32)
  weights, experts = moe.route_softmax(jnp.asarray(rng.normal(size=(n, e)), jnp.float32), k, True)
  skewed = jnp.where(experts < e // 2, experts % 2, experts)  # unequal sizes per device
  w = [
    jnp.asarray(rng.normal(0, 0.1, size=s), jnp.float32) for s in ((e, d, i),) * 2 + ((e, i, d),)
  ]
  mesh = sharding.make_mesh(data=1, expert=p)
  out = {"backend": jax.default_backend(), "devices": p, "dispatch": exchange_kind()}
  for name, ex in (("uniform", experts), ("skewed", skewed)):
    ref = moe.routed_experts(x, weights, ex, *w, "silu")
    for kind in ("ragged", "dense"):
      run = jax.jit(
        lambda *a, kind=kind: routed_experts_sharded(*a, "silu", mesh=mesh, exchange=kind)
      )
      out[f"{name}_{kind}"] = float(jnp.max(jnp.abs(run(x, weights, ex, *w) - ref)))
  print(json.dumps(out))
  return 0 if all(v < 1e-3 for key, v in out.items() if key.endswith(("ragged", "dense"))) else 1


if __name__ == "__main__":
  sys.exit(main())
