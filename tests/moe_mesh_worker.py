"""Run in a subprocess with 8 simulated CPU devices: MoE on meshes against one device.

Expert parallelism (`routed_experts_sharded`) on data x expert
and tensor x expert meshes, through the dense and the (emulated) ragged exchange; an MoE
target's logits and greedy speculative decoding with its parameters sharded by the logical rules
(experts over `expert`, widths over `fsdp`), and a DeepSeek-style MLA + MoE target on an
fsdp x tensor x expert mesh. Prints one JSON line.
"""

import json
import os
import sys

import jax

# Simulated CPU devices through the config, not XLA_FLAGS, so flags the test run sets
# (tests/conftest.py) still reach this process.
jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_default_matmul_precision", "highest")

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from dspark_jax import sharding  # noqa: E402
from dspark_jax.config import MLAConfig, ModelConfig, MoEConfig  # noqa: E402
from dspark_jax.decoding.loop import SpecConfig, speculative_generate  # noqa: E402
from dspark_jax.drafters.ngram import NgramDrafter  # noqa: E402
from dspark_jax.models import moe  # noqa: E402
from dspark_jax.models.moe_parallel import routed_experts_sharded  # noqa: E402
from dspark_jax.models.transformer import forward, init_params  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests.tiny import deepseek_style_moe  # noqa: E402


def expert_layer_diffs():
  rng = np.random.default_rng(0)
  n, d, e, k, i = 32, 16, 8, 2, 12
  x = jnp.asarray(rng.normal(size=(n, d)), jnp.float32)
  weights, experts = moe.route_softmax(jnp.asarray(rng.normal(size=(n, e)), jnp.float32), k, True)
  w = [
    jnp.asarray(rng.normal(0, 0.3, size=s), jnp.float32) for s in ((e, d, i),) * 2 + ((e, i, d),)
  ]
  ref = moe.routed_experts(x, weights, experts, *w, "silu")
  diffs = {}
  for name, shape in [
    ("expert8", dict(data=1, expert=8)),
    ("data2_expert4", dict(data=2, expert=4)),
    ("tensor2_expert4", dict(data=1, tensor=2, expert=4)),
  ]:
    mesh = sharding.make_mesh(**shape)
    for exchange in ("dense", "ragged-emulated"):
      run = lambda *a, mesh=mesh, exchange=exchange: routed_experts_sharded(
        *a, "silu", mesh=mesh, exchange=exchange
      )
      got = jax.jit(run)(x, weights, experts, *w)
      diffs[f"{name}_{exchange}"] = float(jnp.max(jnp.abs(got - ref)))
  # Skewed routing (most assignments to the first device's experts): the ragged sizes differ
  # widely between devices, which a bookkeeping error in the offsets would not survive.
  skewed = jnp.where(experts < 4, experts % 2, experts)
  ref = moe.routed_experts(x, weights, skewed, *w, "silu")
  mesh = sharding.make_mesh(data=1, expert=4, tensor=2)
  run = lambda *a: routed_experts_sharded(*a, "silu", mesh=mesh, exchange="ragged-emulated")
  diffs["skewed_expert4_ragged-emulated"] = float(
    jnp.max(jnp.abs(jax.jit(run)(x, weights, skewed, *w) - ref))
  )
  return diffs


def main():
  assert jax.device_count() == 8, jax.devices()
  out = {"devices": jax.device_count(), "expert_layer": expert_layer_diffs()}
  config = ModelConfig(
    "qwen3",
    128,
    64,
    96,
    2,
    4,
    2,
    16,
    tie_embeddings=False,
    moe=MoEConfig(num_experts=8, experts_per_token=2, expert_size=32),
  )
  params = jax.tree.map(
    lambda x: 3.0 * x if x.ndim > 1 else x, init_params(config, jax.random.key(0))
  )
  tokens = jax.random.randint(jax.random.key(1), (4, 12), 0, 128)
  positions = jnp.broadcast_to(jnp.arange(12), (4, 12))
  step = jax.jit(lambda p: forward(p, tokens, positions, config=config).logits)
  ref = step(params)
  prompts = [[5, 6, 7, 5, 6], [9, 10, 11, 12, 13], [1, 2, 1, 2], [3, 4]]
  drafter = NgramDrafter(3, 128, min_ngram=1)
  spec = SpecConfig(12)
  plain = speculative_generate(params, config, drafter, None, prompts, spec).tokens
  for name, shape in [
    ("data2_expert4", dict(data=2, expert=4)),
    ("data2_tensor2_expert2", dict(data=2, tensor=2, expert=2)),
    ("fsdp2_expert2_tensor2", dict(data=1, fsdp=2, tensor=2, expert=2)),
  ]:
    mesh = sharding.make_mesh(**shape)
    sharded = sharding.shard_params(config, params, mesh)
    out[f"gate_spec_{name}"] = [
      str(a) for a in sharded["layers_0"]["mlp"]["gate_proj"].sharding.spec
    ]
    with jax.set_mesh(mesh):
      out[f"logit_diff_{name}"] = float(jnp.max(jnp.abs(step(sharded) - ref)))
      meshed = speculative_generate(sharded, config, drafter, None, prompts, spec).tokens
    out[f"tokens_equal_{name}"] = meshed == plain
  out.update(deepseek_style_on_fsdp_mesh(prompts, drafter, spec))
  print(json.dumps(out))


def deepseek_style_on_fsdp_mesh(prompts, drafter, spec):
  """An MLA + sigmoid-routed MoE target (shared expert, a dense first layer) on an
  fsdp x tensor x expert mesh: logits and greedy speculative decoding against one device."""
  moe_config = deepseek_style_moe(num_experts=8, expert_size=32)
  mla = MLAConfig(kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=8)
  config = ModelConfig(
    "llama", 128, 64, 96, 2, 4, 4, 8, tie_embeddings=False, moe=moe_config, mla=mla
  )
  params = jax.tree.map(
    lambda x: 3.0 * x if x.ndim > 1 else x, init_params(config, jax.random.key(2))
  )
  tokens = jax.random.randint(jax.random.key(3), (4, 12), 0, 128)
  positions = jnp.broadcast_to(jnp.arange(12), (4, 12))
  step = jax.jit(lambda p: forward(p, tokens, positions, config=config).logits)
  ref = step(params)
  plain = speculative_generate(params, config, drafter, None, prompts, spec).tokens
  mesh = sharding.make_mesh(data=1, fsdp=2, tensor=2, expert=2)
  sharded = sharding.shard_params(config, params, mesh)
  with jax.set_mesh(mesh):
    diff = float(jnp.max(jnp.abs(step(sharded) - ref)))
    meshed = speculative_generate(sharded, config, drafter, None, prompts, spec).tokens
  q_spec = sharded["layers_0"]["attn"]["q_proj"].sharding.spec
  return {
    "deepseek_logit_diff": diff,
    "deepseek_tokens_equal": meshed == plain,
    "deepseek_q_spec": [str(a) for a in q_spec],
  }


if __name__ == "__main__":
  main()
