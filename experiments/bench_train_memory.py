"""Peak memory of one DSpark training step: anchors chunked under jax.checkpoint vs not.

    python experiments/bench_train_memory.py [--out results/bench_train_memory.json]

Vocabulary 151,936 (Qwen3's), 512 anchors x block 7 on one 1,024-token sequence, a small
hidden size (the vocabulary-sized tensors are what chunking bounds). Peak memory is XLA's own
accounting of the compiled step (`memory_analysis()`: arguments + outputs + temporaries), for
both variants in one run; the step is compiled, not executed, so the unchunked variant can be
measured even where it would not fit.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from dspark_jax.config import DraftConfig, ModelConfig
from dspark_jax.drafters.dspark import DSparkDrafter
from dspark_jax.models.transformer import init_params
from dspark_jax.training import losses
from dspark_jax.training.objective import block_terms, sample_anchors

VOCAB, HIDDEN, SEQ, ANCHORS, BLOCK = 151_936, 64, 1024, 512, 7


def measure(chunk: int, drafter, params, batch, anchors, valid) -> dict:
  def loss(trainable):
    terms = block_terms(drafter, {**params, "trainable": trainable}, batch, anchors, valid, chunk)
    return losses.dspark_loss(terms).loss

  start = time.perf_counter()
  compiled = jax.jit(jax.value_and_grad(loss)).lower(params["trainable"]).compile()
  mem = compiled.memory_analysis()
  peak = mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
  return {
    "anchor_chunk": chunk,
    "temp_bytes": int(mem.temp_size_in_bytes),
    "argument_bytes": int(mem.argument_size_in_bytes),
    "output_bytes": int(mem.output_size_in_bytes),
    "peak_bytes": int(peak),
    "compile_seconds": time.perf_counter() - start,
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default="results/bench_train_memory.json")
  parser.add_argument("--chunk", type=int, default=32)
  args = parser.parse_args()
  target = ModelConfig("qwen3", VOCAB, HIDDEN, 128, 3, 4, 2, 16)
  target_params = init_params(target, jax.random.key(0))
  drafter = DSparkDrafter(
    DraftConfig(num_layers=1, target_layer_ids=(0, 1), block_size=BLOCK, num_anchors=ANCHORS),
    target,
  )
  params = drafter.init_params(jax.random.key(1), target_params)
  tokens = jax.random.randint(jax.random.key(2), (1, SEQ), 0, VOCAB)
  batch = {
    "tokens": tokens,
    "loss_mask": jnp.ones((1, SEQ), jnp.int32).at[:, :64].set(0),
    "features": jnp.zeros((1, SEQ, 2 * HIDDEN), jnp.bfloat16),
    "hidden": jnp.zeros((1, SEQ, HIDDEN), jnp.bfloat16),
  }
  anchors, valid = sample_anchors(jax.random.key(3), batch["loss_mask"], ANCHORS)
  rows = [measure(c, drafter, params, batch, anchors, valid) for c in (ANCHORS, args.chunk)]
  result = {
    "command": f"python experiments/bench_train_memory.py --chunk {args.chunk}",
    "machine": f"{platform.node()} {platform.processor() or platform.machine()}, jax "
    f"{jax.__version__}, {jax.devices()[0].platform}",
    "vocab": VOCAB,
    "anchors": ANCHORS,
    "block": BLOCK,
    "seq": SEQ,
    "hidden": HIDDEN,
    "unchunked": rows[0],
    "chunked": rows[1],
    "ratio": rows[1]["peak_bytes"] / rows[0]["peak_bytes"],
  }
  Path(args.out).parent.mkdir(parents=True, exist_ok=True)
  Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
  for r in rows:
    print(
      f"anchor_chunk {r['anchor_chunk']:4d}: peak {r['peak_bytes'] / 2**30:.2f} GiB "
      f"(temporaries {r['temp_bytes'] / 2**30:.2f} GiB)"
    )
  print(f"chunked / unchunked = {result['ratio']:.3f}")


if __name__ == "__main__":
  main()
