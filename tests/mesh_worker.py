"""Run in a subprocess with 8 simulated CPU devices: sharded forward/generation vs one device.

Prints one JSON line with the largest differences; the test asserts on them.
"""

import json

import jax

# Simulated CPU devices through the config, not XLA_FLAGS, so flags the test run sets
# (tests/conftest.py) still reach this process.
jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_default_matmul_precision", "highest")

import jax.numpy as jnp  # noqa: E402

from dspark_jax import sharding  # noqa: E402
from dspark_jax.config import ModelConfig  # noqa: E402
from dspark_jax.decoding.generate import GenerateConfig, generate  # noqa: E402
from dspark_jax.decoding.sampling import SamplingParams  # noqa: E402
from dspark_jax.models.kv_cache import KVCache  # noqa: E402
from dspark_jax.models.transformer import forward, init_params  # noqa: E402


def main():
  assert jax.device_count() == 8, jax.devices()
  config = ModelConfig("qwen3", 128, 64, 96, 2, 4, 2, 16, tie_embeddings=False)
  params = init_params(config, jax.random.key(0))
  tokens = jax.random.randint(jax.random.key(1), (4, 12), 0, 128)
  positions = jnp.broadcast_to(jnp.arange(12), (4, 12))

  def run(params, cache):
    first = forward(params, tokens[:, :8], positions[:, :8], cache, config=config)
    second = forward(params, tokens[:, 8:], positions[:, 8:], first.cache, config=config)
    return first.logits, second.logits

  step = jax.jit(run)
  ref = step(params, KVCache.create(config, 4, 16))

  mesh = sharding.make_mesh(data=4, tensor=2)
  sharded_params = sharding.shard_params(config, params, mesh)
  sharded_cache = sharding.shard_cache(KVCache.create(config, 4, 16), mesh)
  q_spec = sharded_params["layers_0"]["attn"]["q_proj"].sharding.spec
  with jax.set_mesh(mesh):
    got = step(sharded_params, sharded_cache)
  diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(ref, got, strict=True))

  prompts = [[5, 6, 7], [9, 10, 11, 12, 13], [1], [3, 4]]
  gen = GenerateConfig(max_new_tokens=10, sampling=SamplingParams(temperature=1.0, top_k=20))
  plain = generate(params, config, prompts, gen, seed=3).tokens
  with jax.set_mesh(mesh):
    meshed = generate(sharded_params, config, prompts, gen, seed=3).tokens
  print(
    json.dumps(
      {
        "logit_diff": diff,
        "q_proj_spec": list(q_spec),
        "tokens_equal": plain == meshed,
        "devices": jax.device_count(),
      }
    )
  )


if __name__ == "__main__":
  main()
