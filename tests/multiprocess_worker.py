"""One of several local JAX processes (2 CPU devices each) joined by `jax.distributed`: a
drafter training step and a target decode step on a mesh over every process's devices, each
against the same computation on this process's first device alone. Run by
`tests/test_distributed.py`; process 0 prints one JSON line.

    python tests/multiprocess_worker.py PROCESS_ID NUM_PROCESSES PORT
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax

# Simulated CPU devices through the config, not XLA_FLAGS, so flags the test run sets
# (tests/conftest.py) still reach this process.
jax.config.update("jax_num_cpu_devices", 2)
jax.config.update("jax_default_matmul_precision", "highest")

import numpy as np  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402

from dspark_jax import distributed, sharding  # noqa: E402


def gather(tree):
  """Every process's shards of a global pytree, as full NumPy arrays on every process."""
  return jax.tree.map(lambda x: np.asarray(multihost_utils.process_allgather(x, tiled=True)), tree)


def train_steps(mesh, steps=2):
  import tempfile
  from pathlib import Path

  from dspark_jax.training import trainer
  from tests.training.test_trainer import setup

  config, params, drafter, samples, tcfg = setup(Path(tempfile.mkdtemp()))
  fn = trainer.step_fn(drafter, config, tcfg, True, 6)
  if mesh is not None:
    params = sharding.shard_params(config, params, mesh)
  frozen = trainer.draft_frozen(params, config, None)
  trainable = trainer.initial_trainable(drafter, tcfg, params, config)
  if mesh is not None:
    trainable = sharding.shard_drafter_params(drafter, {"trainable": trainable}, mesh)["trainable"]
  opt_state = fn.optimizer.init(trainable)
  losses = []
  for step in range(steps):
    indices, _ = trainer.batch_indices(step, len(samples), tcfg.batch_size, tcfg.seed)
    batch = trainer.host_batch(samples, None, indices, tcfg.max_seq_len)
    if mesh is not None:
      batch = {k: sharding.shard_batch(v, mesh) for k, v in batch.items()}
    rng = jax.random.fold_in(jax.random.key(tcfg.seed), step)
    trainable, opt_state, metrics = trainer._train_step_jit(
      fn, trainable, opt_state, frozen, params, batch, rng, None
    )
    losses.append(float(gather(metrics["loss"]) if mesh is not None else metrics["loss"]))
  return (gather(trainable) if mesh is not None else jax.tree.map(np.asarray, trainable)), losses


def decode_logits(mesh):
  import jax.numpy as jnp

  from dspark_jax.models.kv_cache import KVCache
  from dspark_jax.models.transformer import forward
  from tests.tiny import tiny_model

  config, params = tiny_model("qwen3", scale=3.0)
  tokens = jax.random.randint(jax.random.key(1), (4, 12), 0, config.vocab_size)
  positions = jnp.broadcast_to(jnp.arange(12), (4, 12))
  cache = KVCache.create(config, 4, 16)

  def step(params, tokens, cache):
    first = forward(params, tokens[:, :8], positions[:, :8], cache, config=config)
    return forward(params, tokens[:, 8:], positions[:, 8:], first.cache, config=config).logits

  if mesh is None:
    return np.asarray(jax.jit(step)(params, tokens, cache))
  params = sharding.shard_params(config, params, mesh)
  cache = sharding.shard_cache(cache, mesh)
  tokens = sharding.shard_batch(np.asarray(tokens), mesh)
  with jax.set_mesh(mesh):
    return gather(jax.jit(step)(params, tokens, cache))


def main():
  pid, count, port = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
  distributed.initialize(
    distributed.DistributedArgs(
      coordinator=f"127.0.0.1:{port}", num_processes=count, process_id=pid
    )
  )
  assert jax.process_count() == count and jax.device_count() == 2 * count
  with jax.default_device(jax.local_devices()[0]):
    one_params, one_losses = train_steps(None)
    one_logits = decode_logits(None)
  mesh = sharding.make_mesh(data=jax.device_count())
  with jax.set_mesh(mesh):
    many_params, many_losses = train_steps(mesh)
  many_logits = decode_logits(mesh)
  param_diff = max(
    float(np.max(np.abs(a - b)))
    for a, b in zip(jax.tree.leaves(one_params), jax.tree.leaves(many_params), strict=True)
  )
  if pid == 0:
    result = {
      "processes": jax.process_count(),
      "devices": jax.device_count(),
      "losses_one": one_losses,
      "losses_mesh": many_losses,
      "param_diff": param_diff,
      "logit_diff": float(np.max(np.abs(one_logits - many_logits))),
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
  main()
