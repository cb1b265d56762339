"""The Pallas kernels against their XLA references, timed and compared on the default backend.

    python experiments/bench_kernels.py --out results/bench_kernels.json [--interpret]

On a GPU or TPU the kernels compile for the device; on CPU pass --interpret (the kernels then
run in Pallas' interpreter: a correctness smoke run, not a speed measurement). For each shape
the result records the median milliseconds of kernel and reference (after a warm-up call) and
their largest difference:
  ragged_attention  batch B, T new queries per row at ragged starts, a KV cache of C slots
                    (SmolLM2-135M's heads: 9 query / 3 KV heads of 64)
  verify_flat       R requests of G = 7 draft slots over a vocabulary of 49,152
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from timing import timed  # experiments/timing.py (this folder is on sys.path)


def bench_attention(batches, ts, capacities, interpret, repeats) -> list[dict]:
  from dspark_jax.kernels.ragged_attention import ragged_attention
  from dspark_jax.kernels.reference import ref_ragged_attention

  rows = []
  rng = np.random.default_rng(0)
  for b in batches:
    for t in ts:
      for c in capacities:
        q = jnp.asarray(rng.normal(size=(b, t, 9, 64)), jnp.float32)
        k = jnp.asarray(rng.normal(size=(b, 3, c, 64)), jnp.float32)
        v = jnp.asarray(rng.normal(size=(b, 3, c, 64)), jnp.float32)
        start = jnp.asarray(rng.integers(0, c - t, b), jnp.int32)
        num_q = jnp.full((b,), t, jnp.int32)
        kw = dict(scale=0.125)
        kernel = jax.jit(lambda *a, kw=kw: ragged_attention(*a, **kw, interpret=interpret))
        ref = jax.jit(lambda *a, kw=kw: ref_ragged_attention(*a, **kw))
        args = (q, k, v, start, num_q)
        diff = float(jnp.max(jnp.abs(kernel(*args) - ref(*args))))
        row = dict(
          batch=b,
          t=t,
          capacity=c,
          kernel_ms=timed(kernel, *args, repeats=repeats),
          reference_ms=timed(ref, *args, repeats=repeats),
          max_abs_diff=diff,
        )
        rows.append(row)
        print(json.dumps(row), flush=True)
  return rows


def bench_verify(requests, interpret, repeats, vocab=49_152, g=7) -> list[dict]:
  from dspark_jax.kernels.reference import ref_verify_flat
  from dspark_jax.kernels.verify import verify_flat

  rows = []
  rng = np.random.default_rng(1)
  for r in requests:
    n = r * (g + 1)
    target = jnp.asarray(rng.normal(0, 2, (n, vocab)), jnp.float32)
    draft = jnp.asarray(rng.normal(0, 2, (n, vocab)), jnp.float32)
    tokens = jnp.asarray(rng.integers(0, vocab, n), jnp.int32)
    uniforms = jnp.asarray(rng.uniform(0.001, 1, n), jnp.float32)
    gumbel = jnp.asarray(rng.gumbel(size=(r, vocab)), jnp.float32)
    offsets = jnp.arange(r, dtype=jnp.int32) * (g + 1)
    lengths = jnp.full((r,), g, jnp.int32)
    args = (target, draft, tokens, uniforms, gumbel, offsets, lengths)
    kernel = jax.jit(lambda *a: verify_flat(*a, max_len=g, temperature=1.0, interpret=interpret))
    ref = jax.jit(lambda *a: ref_verify_flat(*a, max_len=g, temperature=1.0))
    same = all(bool(jnp.all(x == y)) for x, y in zip(kernel(*args), ref(*args), strict=True))
    row = dict(
      requests=r,
      kernel_ms=timed(kernel, *args, repeats=repeats),
      reference_ms=timed(ref, *args, repeats=repeats),
      identical=same,
    )
    rows.append(row)
    print(json.dumps(row), flush=True)
  return rows


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--interpret", action="store_true", help="run the kernels interpreted")
  parser.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32])
  parser.add_argument("--t", type=int, nargs="+", default=[1, 8])
  parser.add_argument("--capacity", type=int, nargs="+", default=[1024, 4096])
  parser.add_argument("--requests", type=int, nargs="+", default=[1, 8, 32])
  parser.add_argument("--repeats", type=int, default=20)
  parser.add_argument("--out", default="results/bench_kernels.json")
  args = parser.parse_args(argv)
  record = {
    "machine": f"{platform.machine()}, {platform.platform()}",
    "device": str(jax.devices()[0]),
    "jax": jax.__version__,
    "interpret": args.interpret,
    "ragged_attention": bench_attention(
      args.batch, args.t, args.capacity, args.interpret, args.repeats
    ),
    "verify_flat": bench_verify(args.requests, args.interpret, args.repeats),
  }
  out = Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(record, indent=2) + "\n")
  print(f"wrote {out}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
