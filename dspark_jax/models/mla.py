"""Multi-head latent attention (DeepSeek-V2/V3) over a compressed cache, absorbed projections.

Per token the cache holds two vectors shared by every head: the latent c [r] (RMSNorm'd
down-projection of x) and the rotary key k_rope [p]. Head h's content key and value are linear
maps of the latent, k_h = W_UK_h c and v_h = W_UV_h c, so

  q_nope_h . k_h     = (W_UK_h^T q_nope_h) . c        (scores against the latent itself)
  sum_s p_s v_{h,s}  = W_UV_h (sum_s p_s c_s)          (values summed in latent space)

and the per-head keys and values are never built, neither for the cache nor for the scores.
Scores are q_lat . c + q_rope . k_rope, scaled by (nope + rope dims)^-0.5 as in the expanded
form; `attend_latent_parts` is the attention over such parts, used with the same cache-prefix
buckets and in-place write discipline as grouped-query attention (`models/layers.py`).

The one path serves prefill, decoding and verification. The expanded form (per-head keys and
values from the latent) costs fewer FLOPs per key on long prefills (H*(nope + p) instead of
H*(r + p)); it is the reference in the tests (HF transformers computes it) rather than a
second code path here.

Letters: B batch, T new tokens, S key slots, D width, H heads, R latent rank (kv_lora_rank),
P rotary dims, C content dims (qk_nope_head_dim), V value dims, Q query rank (q_lora_rank).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from dspark_jax.config import MLAConfig
from dspark_jax.models.kv_cache import write_rows
from dspark_jax.models.layers import (
  RMSNorm,
  _param,
  apply_rope,
  attend_cache_and_block,
  attend_cache_prefix,
  attention_mask,
  rope_cos_sin,
)
from dspark_jax.rope_scaling import YarnRope


def attend_latent_parts(q, parts, scale: float, softcap: float | None):
  """Softmax attention in latent space over several (latent, rotary key, mask) parts.

  Args:
    q: (q_lat [B, T, H, R], q_rope [B, T, H, P]).
    parts: ((latent [B, 1, S_i, R], k_rope [B, 1, S_i, P], mask [B, T, S_i]), ...); one
      softmax over the union of the parts' keys.
  Returns:
    [B, T, H, R]: the probability-weighted latents, per head (W_UV still to apply).
  """
  q_lat, q_rope = q
  scores = []
  for latent, k_rope, mask in parts:
    s = jnp.einsum("bthr,bsr->bhts", q_lat, latent[:, 0], preferred_element_type=jnp.float32)
    s = s + jnp.einsum("bthp,bsp->bhts", q_rope, k_rope[:, 0], preferred_element_type=jnp.float32)
    s = s * scale
    if softcap is not None:
      s = jnp.tanh(s / softcap) * softcap
    scores.append(jnp.where(mask[:, None], s, -jnp.inf))
  probs = jax.nn.softmax(jnp.concatenate(scores, axis=-1), axis=-1)
  out, first = 0.0, 0
  for latent, _, _ in parts:
    size = latent.shape[2]
    p = probs[..., first : first + size].astype(latent.dtype)
    out = out + jnp.einsum("bhts,bsr->bthr", p, latent[:, 0])
    first += size
  return out


class LatentAttention(nn.Module):
  """MLA in place of `layers.Attention`, with the same call and return contract: the cache
  entries are (latent [B, 1, T, R], rotary key [B, 1, T, P]) instead of per-head keys/values."""

  num_heads: int
  mla: MLAConfig
  scale: float
  rope_theta: float
  rope_factor: float | YarnRope  # a linear factor or YaRN
  norm_eps: float
  dtype: str

  @nn.compact
  def __call__(self, x_BxTxD, positions_BxT, cache_kv, start_B, write: bool = True):
    m, h, dt = self.mla, self.num_heads, self.dtype
    d, t = x_BxTxD.shape[-1], x_BxTxD.shape[1]
    r, p, c = m.kv_lora_rank, m.qk_rope_head_dim, m.qk_nope_head_dim
    norm = lambda name: RMSNorm(self.norm_eps, 0.0, dt, name=name)
    if m.q_lora_rank is not None:
      wqa = _param(self, "q_a_proj", (d, m.q_lora_rank), ("embed", "q_lora"))
      q_in = norm("q_a_norm")(x_BxTxD @ wqa.astype(dt))
      wq = _param(self, "q_b_proj", (m.q_lora_rank, h, c + p), ("q_lora", "heads", "head_dim"))
    else:
      q_in = x_BxTxD
      wq = _param(self, "q_proj", (d, h, c + p), ("embed", "heads", "head_dim"))
    q = jnp.einsum("btd,dhk->bthk", q_in, wq.astype(dt))
    wkv = _param(self, "kv_a_proj", (d, r + p), ("embed", "kv_lora"))
    kv = x_BxTxD @ wkv.astype(dt)
    latent_BxTxR = norm("kv_a_norm")(kv[..., :r])
    cos, sin = rope_cos_sin(positions_BxT, p, self.rope_theta, self.rope_factor)
    q_rope = apply_rope(q[..., c:], cos, sin)
    k_rope_BxTxP = apply_rope(kv[..., None, r:], cos, sin)[:, :, 0]
    w_uk = _param(self, "k_b_proj", (r, h, c), ("kv_lora", "heads", "head_dim"))
    w_uv = _param(self, "v_b_proj", (r, h, m.v_head_dim), ("kv_lora", "heads", "head_dim"))
    wo = _param(self, "o_proj", (h, m.v_head_dim, d), ("heads", "head_dim", "embed"))
    q_lat = jnp.einsum("bthc,rhc->bthr", q[..., :c], w_uk.astype(dt))
    query = (q_lat, q_rope)

    new_latent, new_rope = latent_BxTxR[:, None], k_rope_BxTxP[:, None]  # [B, 1, T, .]
    if cache_kv is None:
      mask = attention_mask(start_B, t, t, None)
      parts = ((new_latent, new_rope, mask),)
      out_lat = attend_latent_parts(query, parts, self.scale, None)
      keys, values = new_latent, new_rope
    elif write:
      keys = write_rows(cache_kv[0], new_latent, start_B)
      values = write_rows(cache_kv[1], new_rope, start_B)
      out_lat = attend_cache_prefix(
        query, keys, values, start_B, None, self.scale, None, attend_latent_parts
      )
    else:
      out_lat = attend_cache_and_block(
        query,
        *cache_kv,
        new_latent,
        new_rope,
        start_B,
        None,
        self.scale,
        None,
        attend_latent_parts,
      )
      keys, values = new_latent, new_rope
    out_heads = jnp.einsum("bthr,rhv->bthv", out_lat, w_uv.astype(dt))
    return jnp.einsum("bthv,hvd->btd", out_heads, wo.astype(dt)), (keys, values)
