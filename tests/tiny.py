"""Tiny random target models of each family for fast property tests."""

import jax

from dspark_jax.config import ModelConfig, MoEConfig
from dspark_jax.models.transformer import init_params

TINY_VOCAB = 64


def tiny_config(family: str = "llama", **overrides) -> ModelConfig:
  base = dict(
    family=family,
    vocab_size=TINY_VOCAB,
    hidden_size=32,
    intermediate_size=48,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    rope_theta=100.0,
  )
  if family == "gemma3":
    base.update(layer_windows=(3, None), rope_local_theta=10.0, final_logit_softcap=20.0)
  base.update(overrides)
  return ModelConfig(**base)


def tiny_model(family: str = "llama", seed: int = 0, scale: float = 1.0, **overrides):
  """(config, params); `scale` multiplies the weights to make the output distribution peakier."""
  config = tiny_config(family, **overrides)
  params = init_params(config, jax.random.key(seed))
  params = jax.tree.map(lambda x: x * scale if x.ndim > 1 else x, params)
  return config, params


def deepseek_style_moe(num_experts: int = 4, expert_size: int = 16, routed_scale: float = 2.0):
  """DeepSeek-V3-style routing at tiny size: grouped sigmoid router (2 groups, 1 per token,
  2 experts per token), one shared expert, and a dense first layer."""
  return MoEConfig(
    num_experts=num_experts,
    experts_per_token=2,
    expert_size=expert_size,
    router="sigmoid",
    num_groups=2,
    groups_per_token=1,
    routed_scale=routed_scale,
    num_shared_experts=1,
    dense_layers=(0,),
  )
