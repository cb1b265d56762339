"""The MoE layer's expert computation on CPU: the grouped `ragged_dot` path against a per-expert
loop and a dense all-experts computation, on 1 device and with expert parallelism over 8
simulated devices (the dense all-to-all exchange). Compile and run times.

    python experiments/bench_moe.py --out results/bench_moe.json

The 8-device half runs in a subprocess (`--devices 8`), since the device count is fixed when
JAX starts. Simulated devices share this machine's cores, so the 8-device numbers show the
exchange's overhead, not a speedup.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path


def bench(devices: int, tokens_list, experts: int, k: int, d: int, i: int, repeats: int):
  import jax
  import jax.numpy as jnp
  import numpy as np

  from dspark_jax import sharding
  from dspark_jax.models import moe
  from dspark_jax.models.moe_parallel import routed_experts_sharded

  rows = []
  rng = np.random.default_rng(0)
  w = [
    jnp.asarray(rng.normal(0, 0.05, size=s), jnp.float32)
    for s in ((experts, d, i), (experts, d, i), (experts, i, d))
  ]
  for n in tokens_list:
    x = jnp.asarray(rng.normal(size=(n, d)), jnp.float32)
    weights, chosen = moe.route_softmax(
      jnp.asarray(rng.normal(size=(n, experts)), jnp.float32), k, True
    )
    paths = {}
    if devices == 1:
      paths = {name: jax.jit(lambda *a, f=f: f(*a, "silu")) for name, f in moe.EXPERT_PATHS.items()}
    else:
      mesh = sharding.make_mesh(data=1, expert=devices)
      paths["ragged"] = jax.jit(lambda *a: moe.routed_experts(*a, "silu"))
      paths[f"expert-parallel x{devices}"] = jax.jit(
        lambda *a, mesh=mesh: routed_experts_sharded(*a, "silu", mesh=mesh)
      )
    for name, fn in paths.items():
      start = time.perf_counter()
      compiled = fn.lower(x, weights, chosen, *w).compile()
      compile_s = time.perf_counter() - start
      compiled(x, weights, chosen, *w).block_until_ready()
      times = []
      for _ in range(repeats):
        start = time.perf_counter()
        compiled(x, weights, chosen, *w).block_until_ready()
        times.append(time.perf_counter() - start)
      rows.append(
        dict(
          devices=devices,
          tokens=n,
          path=name,
          compile_s=compile_s,
          ms=1e3 * float(np.median(times)),
        )
      )
      print(
        f"devices {devices} tokens {n:5d} {name:22s} compile {compile_s:6.2f}s "
        f"run {rows[-1]['ms']:8.2f} ms",
        file=sys.stderr,
        flush=True,
      )
  return rows


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--devices", type=int, default=None, help="internal: run one half")
  ap.add_argument("--tokens", type=int, nargs="+", default=[64, 512, 2048])
  ap.add_argument("--experts", type=int, default=16)
  ap.add_argument("--k", type=int, default=2)
  ap.add_argument("--hidden", type=int, default=256)
  ap.add_argument("--expert-size", type=int, default=512)
  ap.add_argument("--repeats", type=int, default=5)
  ap.add_argument("--out", default="results/bench_moe.json")
  args = ap.parse_args()
  shape = (args.tokens, args.experts, args.k, args.hidden, args.expert_size, args.repeats)
  if args.devices is not None:
    print(json.dumps(bench(args.devices, *shape)))
    return 0
  rows = bench(1, *shape)
  env = {
    **os.environ,
    "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
    "JAX_PLATFORMS": "cpu",
  }
  argv = [
    sys.executable,
    __file__,
    "--devices",
    "8",
    "--tokens",
    *map(str, args.tokens),
    "--experts",
    str(args.experts),
    "--k",
    str(args.k),
    "--hidden",
    str(args.hidden),
    "--expert-size",
    str(args.expert_size),
    "--repeats",
    str(args.repeats),
  ]
  out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
  rows += json.loads(out.stdout.strip().splitlines()[-1])
  import jax

  meta = dict(
    command=" ".join(sys.argv),
    machine=platform.machine(),
    jax=jax.__version__,
    experts=args.experts,
    k=args.k,
    hidden=args.hidden,
    expert_size=args.expert_size,
  )
  Path(args.out).parent.mkdir(parents=True, exist_ok=True)
  Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
  print("| devices | tokens | path | compile s | run ms |\n|---|---|---|---|---|")
  for r in rows:
    print(
      f"| {r['devices']} | {r['tokens']} | {r['path']} | {r['compile_s']:.2f} | {r['ms']:.2f} |"
    )
  return 0


if __name__ == "__main__":
  sys.exit(main())
