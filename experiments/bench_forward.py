"""The target forward and the drafter's proposal against their matmul floors.

    python experiments/bench_forward.py --out results/bench_forward.json \
      [--drafter data/drafters/smollm2_135m_dspark] [--batch 1 8] [--repeats 20]

For SmolLM2-135M (float32) at batch B and T new tokens per row, over a KV cache of capacity C
holding L valid slots per row:
  forward   one step of `models.transformer.forward` as decoding runs it: inside a jitted
            `lax.fori_loop` that carries the cache (so writes are in place, as in the decode
            loops), the rows' lengths reset to L every step; per-step milliseconds.
  floor     the same weight matrices (q, k, v, o, gate, up, down of every layer, and the LM head)
            multiplied by activations of M = B * T rows, nothing else: what the step cannot go
            below on this machine.
  ratio     forward / floor.
The committed DSpark drafter's `propose` (G slots) and `propose_prefix` (1 slot) are timed the
same way against their own floor (its layers at M = B * G rows, the LM head at B * slots rows),
and against a plain decoding step (T = 1, same cache). Every number is the median of --repeats
timed calls after a warm-up call; all of them come from one run, so ratios are side by side.
Writes one JSON file and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
from timing import timed  # experiments/timing.py (this folder is on sys.path)

from dspark_jax.decoding.profile import forward_steps_fn as forward_step_fn

# (capacity, valid slots): the short-answer case at three capacities, and a long answer.
CACHE_SETTINGS = ((448, 120), (1024, 120), (4096, 120), (1024, 900), (4096, 900))
STEPS_PER_CALL = 8  # forward steps per timed loop call (the per-step time is the quotient)


def layer_matrices(params, config, num_layers: int):
  """Per layer the 7 projection matrices as 2-D [in, out] arrays."""
  d, h, n, k = config.hidden_size, config.num_heads, config.num_kv_heads, config.head_dim
  out = []
  for i in range(num_layers):
    p = params[f"layers_{i}"]
    a, m = p["attn"], p["mlp"]
    out.append(
      (
        a["q_proj"].reshape(d, h * k),
        a["k_proj"].reshape(d, n * k),
        a["v_proj"].reshape(d, n * k),
        a["o_proj"].reshape(h * k, d),
        m["gate_proj"],
        m["up_proj"],
        m["down_proj"],
      )
    )
  return out


def floor_fn(mats, head_DxV, head_rows: int | None = None):
  """x [M, D] -> the chain of every layer's 7 matmuls, then the LM head (on the first
  `head_rows` rows if given): the matmul work of a forward with nothing else."""

  def run(x_MxD):
    h = x_MxD
    for wq, wk, wv, wo, wg, wu, wd in mats:
      q, k, v = h @ wq, h @ wk, h @ wv
      o = q @ wo
      d = ((o @ wg) * (o @ wu)) @ wd
      h = d + k[:, :1] + v[:, :1]  # keeps k and v live at negligible cost
    rows = h if head_rows is None else h[:head_rows]
    return rows @ head_DxV

  return jax.jit(run)


def timed_carry(fn, params, tokens, cache, valid, repeats: int) -> float:
  """Median milliseconds of `fn` (which donates and returns the cache), the cache fed back
  from call to call as a decode loop carries it, after one warm-up call."""
  cache, acc = fn(params, tokens, cache, valid)
  jax.block_until_ready(acc)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    cache, acc = fn(params, tokens, cache, valid)
    jax.block_until_ready(acc)
    times.append((time.perf_counter() - start) * 1e3)
  return statistics.median(times)


def bench_target(model, params, batches, ts, repeats) -> list[dict]:
  from dspark_jax.models.kv_cache import KVCache

  config = model.config
  mats = layer_matrices(params, config, config.num_layers)
  head = params["embedding"].T if config.tie_embeddings else params["lm_head"]
  head = jnp.asarray(head)
  step = forward_step_fn(config, STEPS_PER_CALL)
  rows = []
  for b in batches:
    for t in ts:
      floor = timed(floor_fn(mats, head), jnp.ones((b * t, config.hidden_size)), repeats=repeats)
      tokens = jnp.ones((b, t), jnp.int32)
      for capacity, valid in CACHE_SETTINGS:
        cache = KVCache.create(config, b, capacity)
        valid_b = jnp.full((b,), valid, jnp.int32)
        ms = timed_carry(step, params, tokens, cache, valid_b, repeats) / STEPS_PER_CALL
        rows.append(
          dict(batch=b, t=t, capacity=capacity, valid=valid, forward_ms=ms, floor_ms=floor)
        )
        print(
          f"B={b} T={t:2d} C={capacity:4d} L={valid:3d}: forward {ms:6.1f} ms, floor "
          f"{floor:5.1f} ms, {ms / floor:.2f}x",
          flush=True,
        )
  return rows


def draft_ids_from(path, n: int, model):
  """The n most frequent response tokens of a regenerated-data file (stop tokens kept)."""
  from dspark_jax.data.regenerate import read_regenerated
  from dspark_jax.drafters.draft_vocab import most_frequent_ids

  answers = [r["response_ids"] for r in read_regenerated(path)]
  return most_frequent_ids(answers, n, model.config.vocab_size, always=model.tokenizer.stop_ids)


def bench_drafter(model, params, folder, batches, repeats, vocab=0, vocab_from=None) -> list[dict]:
  from dspark_jax.decoding.sampling import SamplingParams
  from dspark_jax.drafters.draft_vocab import restrict
  from dspark_jax.io.deepspec import load_drafter
  from dspark_jax.models.kv_cache import KVCache

  config = model.config
  drafter, dparams = load_drafter(folder, config, params)
  if vocab:
    drafter, dparams = restrict(drafter, dparams, draft_ids_from(vocab_from, vocab, model))
  g = drafter.draft_len
  backbone = drafter.config.backbone_config(config)
  dmats = layer_matrices(dparams["trainable"], backbone, backbone.num_layers)
  head = params["embedding"].T if config.tie_embeddings else params["lm_head"]
  head = jnp.asarray(dparams["frozen"].get("draft_head", head))
  capacity, valid = CACHE_SETTINGS[0]
  plain = forward_step_fn(config, STEPS_PER_CALL)
  greedy = SamplingParams()
  propose = jax.jit(lambda p, s, a, n, seed, i: drafter.propose(p, s, a, n, greedy, seed, i)[0])
  prefix = jax.jit(
    lambda p, s, a, n, seed, i: drafter.propose_prefix(p, s, a, n, greedy, seed, i, 1)[0]
  )
  rows = []
  for b in batches:
    feats = jnp.zeros((b, valid, len(drafter.feature_layers) * config.hidden_size))
    lens = jnp.full((b,), valid, jnp.int32)
    state = jax.jit(drafter.init_state, static_argnums=4)(
      dparams, feats, jnp.ones((b, valid), jnp.int32), lens, capacity
    )
    inputs = (jnp.ones((b,), jnp.int32), lens, jnp.uint32(0), jnp.arange(b, dtype=jnp.uint32))
    x = jnp.ones((b * g, config.hidden_size))
    plain_cache = KVCache.create(config, b, capacity)
    one = jnp.ones((b, 1), jnp.int32)
    plain_ms = timed_carry(plain, params, one, plain_cache, lens, repeats) / STEPS_PER_CALL
    for slots, fn in ((g, propose), (1, prefix)):
      ms = timed(fn, dparams, state, *inputs, repeats=repeats)
      floor = timed(floor_fn(dmats, head, head_rows=b * slots), x, repeats=repeats)
      rows.append(
        dict(
          batch=b,
          slots=slots,
          draft_vocab=head.shape[1],
          propose_ms=ms,
          floor_ms=floor,
          plain_step_ms=plain_ms,
        )
      )
      print(
        f"B={b} drafter {slots} slot(s), draft vocabulary {head.shape[1]}: {ms:5.1f} ms, "
        f"floor {floor:5.1f} ms ({ms / floor:.2f}x),"
        f" plain step {plain_ms:5.1f} ms ({ms / plain_ms:.2f}x)",
        flush=True,
      )
  return rows


def markdown(record) -> str:
  lines = [
    "| B | T | capacity | valid | forward ms | floor ms | ratio |",
    "|---|---|---|---|---|---|---|",
  ]
  for r in record["target"]:
    lines.append(
      f"| {r['batch']} | {r['t']} | {r['capacity']} | {r['valid']} | {r['forward_ms']:.1f} | "
      f"{r['floor_ms']:.1f} | {r['forward_ms'] / r['floor_ms']:.2f}x |"
    )
  if record.get("drafter"):
    lines += [
      "",
      "| B | slots | draft vocabulary | propose ms | floor ms | ratio | / plain step |",
      "|---|---|---|---|---|---|---|",
    ]
    for r in record["drafter"]:
      lines.append(
        f"| {r['batch']} | {r['slots']} | {r.get('draft_vocab', '')} | {r['propose_ms']:.1f} | "
        f"{r['floor_ms']:.1f} | "
        f"{r['propose_ms'] / r['floor_ms']:.2f}x | {r['propose_ms'] / r['plain_step_ms']:.2f}x |"
      )
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="smollm2-135m")
  parser.add_argument("--drafter", default="data/drafters/smollm2_135m_dspark")
  parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
  parser.add_argument("--t", type=int, nargs="+", default=[1, 2, 4, 8, 16])
  parser.add_argument("--repeats", type=int, default=20)
  parser.add_argument("--out", default="results/bench_forward.json")
  parser.add_argument(
    "--draft-vocab",
    type=int,
    nargs="+",
    default=[0],
    help="draft vocabulary sizes to time the drafter at (0: as committed, the full vocabulary); "
    "the tokens are the most frequent answer tokens of --vocab-from",
  )
  parser.add_argument("--vocab-from", default="data/smollm2_sharegpt_train.jsonl")
  parser.add_argument("--skip-target", action="store_true", help="time the drafter only")
  args = parser.parse_args(argv)

  from dspark_jax.io.load import load_model

  model = load_model(args.model)
  params = jax.device_put(model.params)
  record = {
    "command": "python experiments/bench_forward.py "
    + " ".join(sys.argv[1:] if argv is None else argv),
    "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
    "jax": jax.__version__,
    "device": str(jax.devices()[0]),
    "model": args.model,
    "steps_per_call": STEPS_PER_CALL,
    "target": []
    if args.skip_target
    else bench_target(model, params, args.batch, args.t, args.repeats),
  }
  if args.drafter:
    record["drafter"] = [
      row
      for n in args.draft_vocab
      for row in bench_drafter(
        model, params, args.drafter, args.batch, args.repeats, n, args.vocab_from
      )
    ]
  out = Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(record, indent=2) + "\n")
  print(markdown(record))
  print(f"wrote {out}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
