"""Building blocks of the target family: RMSNorm, RoPE, grouped-query attention, gated MLP.

Letters in names: B batch, T new (query) tokens, S key slots, D model width, H query heads,
N key/value heads, G query heads per key/value head, K head dim, F MLP width.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from dspark_jax.models.kv_cache import write_rows
from dspark_jax.rope_scaling import YarnRope

_DEFAULT_INIT = nn.initializers.normal(0.02)


def _param(module: nn.Module, name: str, shape, axes, init=_DEFAULT_INIT):
  """A float32 parameter annotated with logical axis names (see `dspark_jax.sharding`)."""
  return module.param(name, nn.with_logical_partitioning(init, axes), shape, jnp.float32)


def random_params(abstract_params, rng: jax.Array, norm_value: float = 1.0):
  """Random params shaped like `abstract_params` (a pytree of ShapeDtypeStructs), drawn the way
  the modules' initializers draw them: N(0, 0.02) matrices, norm scales `norm_value`, zero
  biases. NumPy draws them because compiling Flax's init costs seconds per model even when tiny
  (one threefry kernel per parameter), which tests and sweeps pay again and again.
  """
  gen = np.random.default_rng(np.asarray(jax.random.key_data(rng)).ravel())

  def draw(path, x):
    name = str(getattr(path[-1], "key", path[-1]))
    if name == "scale":
      return jnp.full(x.shape, norm_value, jnp.float32)
    if name.endswith("bias"):
      return jnp.zeros(x.shape, jnp.float32)
    return jnp.asarray(0.02 * gen.standard_normal(x.shape), jnp.float32)

  return jax.tree_util.tree_map_with_path(draw, abstract_params)


class RMSNorm(nn.Module):
  """RMSNorm over the last axis; Gemma stores the weight as w and applies (1 + w)."""

  eps: float
  offset: float = 0.0
  dtype: str = "float32"

  @nn.compact
  def __call__(self, x):
    init = nn.initializers.zeros if self.offset else nn.initializers.ones
    scale = _param(self, "scale", (x.shape[-1],), ("norm",), init)
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return (normed * (scale.astype(jnp.float32) + self.offset)).astype(self.dtype)


def rope_cos_sin(
  positions_BxT: jax.Array, head_dim: int, theta: float, scaling: float | YarnRope = 1.0
):
  """cos and sin tables [B, T, K] for the half-split ("rotate half") RoPE layout.

  `scaling`: a linear factor (positions divided by it) or a `YarnRope`."""
  if isinstance(scaling, YarnRope):
    inv_freq, magnitude = jnp.asarray(scaling.inv_freq(head_dim, theta)), scaling.attention_factor
  else:
    inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    inv_freq, magnitude = inv_freq / scaling, 1.0
  angles = positions_BxT.astype(jnp.float32)[..., None] * inv_freq
  angles = jnp.concatenate([angles, angles], axis=-1)
  if magnitude == 1.0:
    return jnp.cos(angles), jnp.sin(angles)
  return jnp.cos(angles) * magnitude, jnp.sin(angles) * magnitude


def apply_rope(x_BxTxHxK: jax.Array, cos_BxTxK: jax.Array, sin_BxTxK: jax.Array) -> jax.Array:
  half = x_BxTxHxK.shape[-1] // 2
  x32 = x_BxTxHxK.astype(jnp.float32)
  rotated = jnp.concatenate([-x32[..., half:], x32[..., :half]], axis=-1)
  out = x32 * cos_BxTxK[:, :, None, :] + rotated * sin_BxTxK[:, :, None, :]
  return out.astype(x_BxTxHxK.dtype)


def attention_mask(start_B: jax.Array, num_new: int, num_slots: int, window: int | None):
  """Which key slots each new query may see: [B, T, S] bool.

  Query t of row b sits in slot start_B[b] + t; it sees slots up to and including its own
  (causal), and with a sliding window only the `window` most recent of them.
  """
  query_slot_BxT = start_B[:, None] + jnp.arange(num_new)[None, :]
  key_slot_S = jnp.arange(num_slots)
  diff_BxTxS = query_slot_BxT[:, :, None] - key_slot_S[None, None, :]
  visible = diff_BxTxS >= 0
  if window is not None:
    visible &= diff_BxTxS < window
  return visible


def attend(q_BxTxHxK, k_BxNxSxK, v_BxNxSxK, mask_BxTxS, scale: float, softcap: float | None):
  """Grouped-query softmax attention with float32 scores; returns [B, T, H, K].

  Batched matmuls for every query-block size: with the caches read only up to the valid
  prefix (`attend_cache_prefix`), they measure faster on XLA:CPU than the broadcast-multiply
  form this used for small blocks, at batch 1 and 8, one token and eight
  (experiments/bench_forward.py).
  """
  return attend_parts(q_BxTxHxK, ((k_BxNxSxK, v_BxNxSxK, mask_BxTxS),), scale, softcap)


def attend_parts(q_BxTxHxK, parts, scale: float, softcap: float | None):
  """`attend` over the union of several key/value sets [(k [B, N, S_i, K], v, mask [B, T,
  S_i]), ...]: one softmax over every part's scores (concatenated scores, never concatenated
  keys, so no part's keys are copied). Returns [B, T, H, K]."""
  b, t, h, k = q_BxTxHxK.shape
  n = parts[0][0].shape[1]
  q_BxNxGxTxK = q_BxTxHxK.reshape(b, t, n, h // n, k).transpose(0, 2, 3, 1, 4)
  scores = []
  for keys, _, mask in parts:
    part = jnp.einsum("bngtk,bnsk->bngts", q_BxNxGxTxK, keys, preferred_element_type=jnp.float32)
    part = part * scale
    if softcap is not None:
      part = jnp.tanh(part / softcap) * softcap
    scores.append(jnp.where(mask[:, None, None, :, :], part, -jnp.inf))
  probs = jax.nn.softmax(jnp.concatenate(scores, axis=-1), axis=-1)
  out, first = 0.0, 0
  for keys, values, _ in parts:
    size = keys.shape[2]
    p = probs[..., first : first + size].astype(values.dtype)
    out = out + jnp.einsum("bngts,bnsk->bngtk", p, values)
    first += size
  return out.transpose(0, 3, 1, 2, 4).reshape(b, t, h, k)


def prefix_buckets(capacity: int, smallest: int = 128) -> tuple[int, ...]:
  """Cache-prefix lengths attention is compiled for: powers of two from `smallest`, then the
  capacity itself (e.g. 448 -> (128, 256, 448))."""
  sizes, size = [], smallest
  while size < capacity:
    sizes.append(size)
    size *= 2
  return (*sizes, capacity)


def prefix_bucket_index(buckets: tuple[int, ...], need: jax.Array) -> jax.Array:
  """Index of the smallest bucket holding `need` slots (the last one if none does)."""
  return jnp.sum(jnp.asarray(buckets[:-1]) < need).astype(jnp.int32)


def attend_cache_prefix(
  q_BxTxHxK,
  keys_BxNxSxK,
  values_BxNxSxK,
  start_B,
  window,
  scale: float,
  softcap,
  parts_fn=attend_parts,
) -> jax.Array:
  """Attention of T new queries (query t of row b in slot start_B[b] + t) over the cache after
  this step's write, read only up to the smallest compiled prefix that holds every row's last
  query slot (`prefix_buckets`, chosen with `lax.switch`): a step costs what the valid length
  needs, not what the capacity holds. Slots past a row's queries are masked and weigh exactly
  zero, so the result is the attention over the whole cache up to the order of summation.
  Reading the written cache through the switch also keeps XLA from fusing the cache write into
  the attention's operands, which at batch 1 made it copy every layer's cache twice a step.

  `parts_fn` is the attention over (keys, values, mask) parts (`attend_parts`; MLA passes its
  latent form, where q may be a tuple of arrays).

  Returns [B, T, H, K].
  """
  t = jax.tree.leaves(q_BxTxHxK)[0].shape[1]
  buckets = prefix_buckets(keys_BxNxSxK.shape[2])

  def over_prefix(size):
    def run(q, keys, values, start):
      mask = attention_mask(start, t, size, window)
      return parts_fn(q, ((keys[:, :, :size], values[:, :, :size], mask),), scale, softcap)

    return run

  index = prefix_bucket_index(buckets, jnp.max(start_B) + t)
  branches = [over_prefix(size) for size in buckets]
  return jax.lax.switch(index, branches, q_BxTxHxK, keys_BxNxSxK, values_BxNxSxK, start_B)


def attend_cache_and_block(
  q_BxTxHxK,
  cache_k,
  cache_v,
  k_BxNxTxK,
  v_BxNxTxK,
  start_B,
  window,
  scale: float,
  softcap,
  parts_fn=attend_parts,
) -> jax.Array:
  """Attention of T new queries over the cache's valid slots (read only, up to the smallest
  compiled prefix that holds every row's `start_B` slots, chosen with `lax.switch`) and over
  the new tokens' own keys/values (causal), without writing the cache: the caller writes the
  new entries afterwards (`models.kv_cache.write_entries`). Keeping the write out of the
  attention, and out of any conditional the forward runs in, is what lets XLA update the cache
  in place; the decode loop's width switch otherwise copied every layer's cache every round.
  The keys seen are exactly those of the write-then-attend formulation (`attend_cache_prefix`),
  which is the one to use outside conditionals (see `Attention`).

  Returns [B, T, H, K]; `parts_fn` as in `attend_cache_prefix`.
  """
  t = jax.tree.leaves(q_BxTxHxK)[0].shape[1]
  buckets = prefix_buckets(cache_k.shape[2])
  block_mask = attention_mask(jnp.zeros_like(start_B), t, t, window)

  def over_prefix(size):
    def run(q, cache_k, cache_v, k_new, v_new, start):
      cached = attention_mask(start, t, size, window) & (jnp.arange(size) < start[:, None, None])
      parts = ((cache_k[:, :, :size], cache_v[:, :, :size], cached), (k_new, v_new, block_mask))
      return parts_fn(q, parts, scale, softcap)

    return run

  index = prefix_bucket_index(buckets, jnp.max(start_B))
  branches = [over_prefix(size) for size in buckets]
  args = (q_BxTxHxK, cache_k, cache_v, k_BxNxTxK, v_BxNxTxK, start_B)
  return jax.lax.switch(index, branches, *args)


class Attention(nn.Module):
  """Grouped-query attention over a per-row KV cache and the new tokens.

  Returns (output, (keys, values)): with `write` the cache with the new entries written at
  each row's `start_B`, without it the new entries alone ([B, N, T, K]) for the caller to
  write.
  """

  num_heads: int
  num_kv_heads: int
  head_dim: int
  scale: float
  window: int | None
  rope_theta: float
  rope_factor: float | YarnRope  # a linear factor or YaRN
  qk_norm: bool
  norm_eps: float
  norm_offset: float
  softcap: float | None
  dtype: str

  @nn.compact
  def __call__(self, x_BxTxD, positions_BxT, cache_kv, start_B, write: bool = True):
    d = x_BxTxD.shape[-1]
    h, n, k = self.num_heads, self.num_kv_heads, self.head_dim
    wq = _param(self, "q_proj", (d, h, k), ("embed", "heads", "head_dim"))
    wk = _param(self, "k_proj", (d, n, k), ("embed", "kv_heads", "head_dim"))
    wv = _param(self, "v_proj", (d, n, k), ("embed", "kv_heads", "head_dim"))
    wo = _param(self, "o_proj", (h, k, d), ("heads", "head_dim", "embed"))
    dt = self.dtype
    q = jnp.einsum("btd,dhk->bthk", x_BxTxD, wq.astype(dt))
    k_new = jnp.einsum("btd,dnk->btnk", x_BxTxD, wk.astype(dt))
    v_new = jnp.einsum("btd,dnk->btnk", x_BxTxD, wv.astype(dt))
    if self.qk_norm:
      q = RMSNorm(self.norm_eps, self.norm_offset, dt, name="q_norm")(q)
      k_new = RMSNorm(self.norm_eps, self.norm_offset, dt, name="k_norm")(k_new)
    cos, sin = rope_cos_sin(positions_BxT, k, self.rope_theta, self.rope_factor)
    q, k_new = apply_rope(q, cos, sin), apply_rope(k_new, cos, sin)

    k_new, v_new = k_new.transpose(0, 2, 1, 3), v_new.transpose(0, 2, 1, 3)  # [B, N, T, K]
    if cache_kv is None:  # no cache: attend within the new tokens only
      keys, values = k_new, v_new
      mask = attention_mask(start_B, x_BxTxD.shape[1], keys.shape[2], self.window)
      out_BxTxHxK = attend(q, keys, values, mask, self.scale, self.softcap)
    elif write:
      keys = write_rows(cache_kv[0], k_new, start_B)
      values = write_rows(cache_kv[1], v_new, start_B)
      out_BxTxHxK = attend_cache_prefix(
        q, keys, values, start_B, self.window, self.scale, self.softcap
      )
    else:
      # Two forms, each where XLA keeps the cache in place: write-then-read when the forward
      # runs in straight-line code (a read of the cache before an in-place write in the same
      # computation made XLA copy it), read-only when it runs inside a conditional and the
      # caller writes after (a write inside the conditional made XLA copy it instead).
      out_BxTxHxK = attend_cache_and_block(
        q, *cache_kv, k_new, v_new, start_B, self.window, self.scale, self.softcap
      )
      keys, values = k_new, v_new
    out = jnp.einsum("bthk,hkd->btd", out_BxTxHxK, wo.astype(dt))
    return out, (keys, values)


class GatedMLP(nn.Module):
  """down(act(gate(x)) * up(x)) with SiLU (Llama, Qwen3) or tanh-GELU (Gemma)."""

  hidden: int
  activation: str
  dtype: str

  @nn.compact
  def __call__(self, x_BxTxD):
    d = x_BxTxD.shape[-1]
    w_gate = _param(self, "gate_proj", (d, self.hidden), ("embed", "mlp"))
    w_up = _param(self, "up_proj", (d, self.hidden), ("embed", "mlp"))
    w_down = _param(self, "down_proj", (self.hidden, d), ("mlp", "embed"))
    dt = self.dtype
    gate = x_BxTxD @ w_gate.astype(dt)
    act = jax.nn.silu(gate) if self.activation == "silu" else jax.nn.gelu(gate, approximate=True)
    return (act * (x_BxTxD @ w_up.astype(dt))) @ w_down.astype(dt)
