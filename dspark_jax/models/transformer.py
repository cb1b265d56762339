"""The decoder-only target family (Llama/SmolLM2, Qwen3, Gemma3; MoE and MLA variants such as
Qwen3-MoE and DeepSeek-V3) as one Flax module.

Used functionally: `forward(params, tokens, positions, cache, config=...)` is a pure function of
its inputs; prefill, decoding and verification are the same call with different T.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import linen as nn

from dspark_jax.config import ModelConfig
from dspark_jax.models.kv_cache import KVCache
from dspark_jax.models.layers import Attention, GatedMLP, RMSNorm, _param, random_params
from dspark_jax.models.mla import LatentAttention
from dspark_jax.models.moe import MoEMLP


class ForwardOutput(NamedTuple):
  logits: jax.Array  # [B, T, V] float32
  features: jax.Array | None  # [B, T, m*D]: requested layers' raw outputs, concatenated
  hidden: jax.Array  # [B, T, D]: final-normed hidden state (the LM head's input)
  cache: KVCache | None  # lengths advanced by T (the input cache when the write is deferred)
  # With forward(..., write_cache=False): per layer the new tokens' (keys, values) [B, N, T, K],
  # for `KVCache.write_entries` to write after whatever conditional the forward ran in.
  new_entries: tuple | None = None


class Block(nn.Module):
  config: ModelConfig
  layer: int
  expert_path: str = "ragged"

  @nn.compact
  def __call__(self, x_BxTxD, positions_BxT, cache_kv, start_B, write=True):
    c = self.config
    offset = 1.0 if c.gemma_style else 0.0
    norm = lambda name: RMSNorm(c.rms_eps, offset, c.dtype, name=name)
    theta, factor = c.rope(self.layer)
    if c.mla is not None:
      attn = LatentAttention(
        c.num_heads, c.mla, c.scale, theta, factor, c.rms_eps, c.dtype, name="attn"
      )
    else:
      attn = Attention(
        num_heads=c.num_heads,
        num_kv_heads=c.num_kv_heads,
        head_dim=c.head_dim,
        scale=c.scale,
        window=c.window(self.layer),
        rope_theta=theta,
        rope_factor=factor,
        qk_norm=c.qk_norm,
        norm_eps=c.rms_eps,
        norm_offset=offset,
        softcap=c.attn_logit_softcap,
        dtype=c.dtype,
        name="attn",
      )
    activation = "gelu_tanh" if c.gemma_style else "silu"
    if c.is_moe(self.layer):
      mlp = MoEMLP(c.moe, activation, c.dtype, self.expert_path, name="mlp")
    else:
      mlp = GatedMLP(c.intermediate_size, activation, c.dtype, name="mlp")
    attn_out, new_kv = attn(norm("input_norm")(x_BxTxD), positions_BxT, cache_kv, start_B, write)
    if c.gemma_style:
      attn_out = norm("post_attn_norm")(attn_out)
    x_BxTxD = x_BxTxD + attn_out
    mlp_out = mlp(norm("pre_mlp_norm")(x_BxTxD))
    if c.gemma_style:
      mlp_out = norm("post_mlp_norm")(mlp_out)
    return x_BxTxD + mlp_out, new_kv


class Transformer(nn.Module):
  config: ModelConfig

  @nn.compact
  def __call__(
    self, tokens_BxT, positions_BxT, cache: KVCache | None, feature_layers=(), write=True
  ):
    c = self.config
    embedding_VxD = _param(self, "embedding", (c.vocab_size, c.hidden_size), ("vocab", "embed"))
    x = jnp.take(embedding_VxD, tokens_BxT, axis=0).astype(c.dtype)
    if c.gemma_style:
      # Gemma multiplies by sqrt(D) rounded to the compute dtype, as its reference does.
      x = x * jnp.asarray(c.hidden_size**0.5, c.dtype)
    start_B = cache.lengths if cache is not None else jnp.zeros(tokens_BxT.shape[0], jnp.int32)

    outputs = {-1: x}
    keys, values = [], []
    for i in range(c.num_layers):
      kv = None if cache is None else (cache.keys[i], cache.values[i])
      x, (k, v) = Block(c, i, name=f"layers_{i}")(x, positions_BxT, kv, start_B, write)
      keys.append(k)
      values.append(v)
      if i in feature_layers:
        outputs[i] = x
    hidden = RMSNorm(c.rms_eps, 1.0 if c.gemma_style else 0.0, c.dtype, name="final_norm")(x)

    if c.tie_embeddings:
      logits = jnp.einsum("btd,vd->btv", hidden, embedding_VxD.astype(c.dtype))
    else:
      lm_head = _param(self, "lm_head", (c.hidden_size, c.vocab_size), ("embed", "vocab"))
      logits = hidden @ lm_head.astype(c.dtype)
    logits = logits.astype(jnp.float32)
    if c.final_logit_softcap is not None:
      logits = jnp.tanh(logits / c.final_logit_softcap) * c.final_logit_softcap

    features = None
    if feature_layers:
      features = jnp.concatenate([outputs[i] for i in feature_layers], axis=-1)
    if cache is None:
      return ForwardOutput(logits, features, hidden, None)
    if not write:
      return ForwardOutput(logits, features, hidden, cache, tuple(zip(keys, values, strict=True)))
    new_cache = KVCache(tuple(keys), tuple(values), cache.lengths + tokens_BxT.shape[1])
    return ForwardOutput(logits, features, hidden, new_cache)


def check_feature_layers(config: ModelConfig, feature_layers) -> tuple[int, ...]:
  layers = tuple(int(i) for i in feature_layers)
  bad = [i for i in layers if not -1 <= i < config.num_layers]
  if bad:
    raise ValueError(
      f"feature layer ids {bad} are out of range: valid ids are -1 (embedding output) to "
      f"{config.num_layers - 1}"
    )
  return layers


def forward(
  params,
  tokens_BxT: jax.Array,
  positions_BxT: jax.Array,
  cache: KVCache | None = None,
  *,
  config: ModelConfig,
  feature_layers=(),
  write_cache: bool = True,
) -> ForwardOutput:
  """One pass of the target over T new tokens per row.

  Args:
    params: the parameter pytree (plain arrays, as returned by `init_params` or a loader).
    tokens_BxT: int token ids.
    positions_BxT: int RoPE positions of the new tokens.
    cache: KV cache; the new tokens go to slots [lengths, lengths + T) of each row. None runs
      a plain causal forward over the tokens alone.
    config: the model config (static).
    feature_layers: layer ids whose outputs to return; -1 is the embedding output.
    write_cache: False leaves the cache as it is and returns the new entries instead
      (`ForwardOutput.new_entries`, written with `KVCache.write_entries`); same outputs.
  """
  layers = check_feature_layers(config, feature_layers)
  return Transformer(config).apply(
    {"params": params}, tokens_BxT, positions_BxT, cache, layers, write_cache
  )


def _abstract_variables(config: ModelConfig):
  tokens = jnp.zeros((1, 1), jnp.int32)
  return jax.eval_shape(lambda: Transformer(config).init(jax.random.key(0), tokens, tokens, None))[
    "params"
  ]


def init_params(config: ModelConfig, rng: jax.Array):
  """Random parameters (normal(0.02) matrices, identity norms) as a plain pytree."""
  return random_params(param_shapes(config), rng, 0.0 if config.gemma_style else 1.0)


def logical_axes(config: ModelConfig):
  """The logical axis names of every parameter, as a pytree of PartitionSpecs."""
  return nn.get_partition_spec(_abstract_variables(config))


def param_shapes(config: ModelConfig):
  """ShapeDtypeStructs of every parameter (for validating loaded checkpoints)."""
  return nn.unbox(_abstract_variables(config))


# The jitted forward (config and feature layers static). Prefer it outside larger jitted code.
forward_jit = jax.jit(forward, static_argnames=("config", "feature_layers", "write_cache"))
