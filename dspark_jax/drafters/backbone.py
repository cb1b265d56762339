"""The parallel block backbone of DSpark and DFlash ("KV injection").

Each draft layer's attention sees keys/values [context; block]: the context entries are the same
k/v projections applied to the projected target features H_ctx (which no layer updates), the
block entries come from the block's own hidden states. Queries come from the block only. A block
sees the context strictly before its anchor and its whole own block (bidirectional).

Layouts: context keys/values [B, N, S, K] (the KV-cache layout: S context slots, slot = position);
blocks [B, A, G, ...] (A anchor blocks per row, G slots each). Letters: B batch, A blocks,
G block slots, S context slots, D width, H query heads, N KV heads, R = H / N, K head size.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from dspark_jax.config import ModelConfig
from dspark_jax.models.layers import GatedMLP, RMSNorm, _param, apply_rope, rope_cos_sin
from dspark_jax.models.moe import MoEMLP


def _rope(x_BxTxHxK, positions_BxT, config: ModelConfig):
  cos, sin = rope_cos_sin(positions_BxT, config.head_dim, config.rope_theta, config.rope_scaling)
  return apply_rope(x_BxTxHxK, cos, sin)


class InjectionAttention(nn.Module):
  """Block queries over [context; block] keys with shared projections and q/k norm."""

  config: ModelConfig

  def setup(self):
    c = self.config
    d, h, n, k = c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim
    self.q_proj = _param(self, "q_proj", (d, h, k), ("embed", "heads", "head_dim"))
    self.k_proj = _param(self, "k_proj", (d, n, k), ("embed", "kv_heads", "head_dim"))
    self.v_proj = _param(self, "v_proj", (d, n, k), ("embed", "kv_heads", "head_dim"))
    self.o_proj = _param(self, "o_proj", (h, k, d), ("heads", "head_dim", "embed"))
    self.q_norm = RMSNorm(c.rms_eps, 0.0, c.dtype)
    self.k_norm = RMSNorm(c.rms_eps, 0.0, c.dtype)

  def keys_values(self, x_BxTxD, positions_BxT):
    """Rotated, normed keys and values [B, T, N, K] of T tokens."""
    dt = self.config.dtype
    k = self.k_norm(jnp.einsum("btd,dnk->btnk", x_BxTxD, self.k_proj.astype(dt)))
    v = jnp.einsum("btd,dnk->btnk", x_BxTxD, self.v_proj.astype(dt))
    return _rope(k, positions_BxT, self.config), v

  def __call__(self, x_BxAxGxD, positions_BxAxG, ctx_k_BxNxSxK, ctx_v_BxNxSxK, ctx_visible_BxAxS):
    c = self.config
    b, a, g, d = x_BxAxGxD.shape
    n, r, kd = c.num_kv_heads, c.num_heads // c.num_kv_heads, c.head_dim
    dt = c.dtype
    x = x_BxAxGxD.reshape(b, a * g, d)
    pos = positions_BxAxG.reshape(b, a * g)
    q = self.q_norm(jnp.einsum("btd,dhk->bthk", x, self.q_proj.astype(dt)))
    q = _rope(q, pos, c).reshape(b, a, g, n, r, kd)
    k_blk, v_blk = self.keys_values(x, pos)
    k_blk, v_blk = k_blk.reshape(b, a, g, n, kd), v_blk.reshape(b, a, g, n, kd)

    f32 = jnp.float32
    s_ctx = jnp.einsum("bagnrk,bnsk->bagnrs", q, ctx_k_BxNxSxK, preferred_element_type=f32)
    s_blk = jnp.einsum("bagnrk,bajnk->bagnrj", q, k_blk, preferred_element_type=f32)
    s_ctx = jnp.where(ctx_visible_BxAxS[:, :, None, None, None, :], s_ctx * c.scale, -jnp.inf)
    probs = jax.nn.softmax(jnp.concatenate([s_ctx, s_blk * c.scale], axis=-1), axis=-1)
    num_ctx = ctx_k_BxNxSxK.shape[2]
    p_ctx, p_blk = probs[..., :num_ctx].astype(dt), probs[..., num_ctx:].astype(dt)
    out = jnp.einsum("bagnrs,bnsk->bagnrk", p_ctx, ctx_v_BxNxSxK) + jnp.einsum(
      "bagnrj,bajnk->bagnrk", p_blk, v_blk
    )
    out = out.reshape(b, a, g, n * r, kd)
    return jnp.einsum("baghk,hkd->bagd", out, self.o_proj.astype(dt))


class DraftLayer(nn.Module):
  """Pre-norm decoder layer (Qwen3 style) whose attention is `InjectionAttention`; its MLP is
  routed experts when the backbone config says so for this layer (the V4-style drafter)."""

  config: ModelConfig
  layer: int = 0

  def setup(self):
    c = self.config
    self.input_norm = RMSNorm(c.rms_eps, 0.0, c.dtype)
    self.attn = InjectionAttention(c)
    self.pre_mlp_norm = RMSNorm(c.rms_eps, 0.0, c.dtype)
    if c.is_moe(self.layer):
      self.mlp = MoEMLP(c.moe, "silu", c.dtype)
    else:
      self.mlp = GatedMLP(c.intermediate_size, "silu", c.dtype)

  def context_kv(self, h_ctx_BxSxD, positions_BxS):
    """This layer's context keys/values [B, N, S, K] (H_ctx enters un-normed, as in DFlash)."""
    k, v = self.attn.keys_values(h_ctx_BxSxD, positions_BxS)
    return k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)

  def __call__(self, x_BxAxGxD, positions_BxAxG, ctx_kv, ctx_visible_BxAxS):
    x = x_BxAxGxD
    x = x + self.attn(self.input_norm(x), positions_BxAxG, *ctx_kv, ctx_visible_BxAxS)
    return x + self.mlp(self.pre_mlp_norm(x))
