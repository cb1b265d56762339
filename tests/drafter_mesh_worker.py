"""Run in a subprocess with 8 simulated CPU devices: a DSpark proposal on a mesh vs one device.

Prints one JSON line with the differences; `tests/drafters/test_drafters.py` asserts on them.
"""

import json

import jax

# Simulated CPU devices through the config, not XLA_FLAGS, so flags the test run sets
# (tests/conftest.py) still reach this process.
jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_default_matmul_precision", "highest")

import jax.numpy as jnp  # noqa: E402

from dspark_jax import sharding  # noqa: E402
from dspark_jax.config import DraftConfig, ModelConfig  # noqa: E402
from dspark_jax.decoding.sampling import SamplingParams  # noqa: E402
from dspark_jax.drafters.dspark import DSparkDrafter  # noqa: E402
from dspark_jax.drafters.shared import frozen_parts  # noqa: E402
from dspark_jax.models.transformer import forward, init_params  # noqa: E402


def main():
  assert jax.device_count() == 8, jax.devices()
  target = ModelConfig("qwen3", 128, 64, 96, 3, 4, 2, 16, tie_embeddings=False)
  target_params = init_params(target, jax.random.key(0))
  config = DraftConfig(block_size=5, num_layers=2, target_layer_ids=(0, 1), markov_rank=16)
  drafter = DSparkDrafter(config, target)
  params = drafter.init_params(jax.random.key(1), target_params)
  tokens = jax.random.randint(jax.random.key(2), (4, 12), 0, 128)
  positions = jnp.broadcast_to(jnp.arange(12), (4, 12))
  features = forward(
    target_params, tokens, positions, config=target, feature_layers=(0, 1)
  ).features
  lens = jnp.array([12, 7, 9, 3])
  sampling = SamplingParams(1.0)

  @jax.jit
  def propose(params, features):
    state = drafter.init_state(params, features, tokens, lens, 32)
    proposal, _ = drafter.propose(
      params, state, tokens[:, -1], lens, sampling, jnp.uint32(5), jnp.arange(4)
    )
    return proposal

  ref = propose(params, features)
  mesh = sharding.make_mesh(data=4, tensor=2)
  sharded_target = sharding.shard_params(target, target_params, mesh)
  sharded = sharding.shard_drafter_params(
    drafter, {**params, "frozen": frozen_parts(sharded_target, target)}, mesh
  )
  fc_spec = sharded["trainable"]["layers_0"]["attn"]["q_proj"].sharding.spec
  w2_spec = sharded["trainable"]["markov_head"]["markov_w2"].sharding.spec
  with jax.set_mesh(mesh):
    got = propose(sharded, sharding.shard_batch(features, mesh))
  print(
    json.dumps(
      {
        "logit_diff": float(jnp.max(jnp.abs(ref.logits - got.logits))),
        "confidence_diff": float(jnp.max(jnp.abs(ref.confidence - got.confidence))),
        "tokens_equal": bool(jnp.all(ref.tokens == got.tokens)),
        "q_proj_spec": [str(a) for a in fc_spec],
        "markov_w2_spec": [str(a) for a in w2_spec],
      }
    )
  )


if __name__ == "__main__":
  main()
