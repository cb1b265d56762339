"""Pallas kernel: attention of variable-length query blocks over each row's KV cache.

Row b holds `num_q[b]` new queries (0 <= num_q <= T: a decode step has 1, a verification block
G + 1, an idle slot of a serving batch 0) sitting in cache slots start[b] .. start[b] + num_q[b]
- 1, whose keys and values are already written to the cache. Query t sees slots <= start + t
(causal), and with a sliding window only those with (start + t) - slot < window.

One program per (row, KV head). It walks the row's valid slots [0, start + num_q) in blocks of
`block_s` with an online softmax (running max, normaliser and weighted sum in float32), so the
work and the memory read follow the valid length, never the cache's capacity, and slots past
the valid range are never read (the tests fill them with NaN). The last block is read at an
offset clamped to the capacity, with the slots an earlier block already covered masked out, so
any capacity works with any block size. Queries past num_q[b] get zeros.

Same signature as `reference.ref_ragged_attention`; `dispatch.ragged_attention` chooses.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

_NEG = -jnp.inf


def _kernel(
  start_ref, num_q_ref, q_ref, k_ref, v_ref, o_ref, *, scale, softcap, window, block_s, group
):
  b, n = pl.program_id(0), pl.program_id(1)
  t, k = q_ref.shape[1], q_ref.shape[3]
  capacity = k_ref.shape[2]
  start, num_q = start_ref[b], num_q_ref[b]
  # Queries of this KV head's group, [T * group, K]; row i is query t = i // group.
  q = q_ref[b, :, pl.ds(n * group, group), :].astype(jnp.float32).reshape(t * group, k)
  q_slot = start + jnp.arange(t * group) // group  # [TG]
  q_live = jnp.arange(t * group) // group < num_q
  valid_len = start + num_q

  def block(i, carry):
    m, norm, acc = carry
    first = i * block_s
    offset = jnp.minimum(first, capacity - block_s)
    slots = offset + jnp.arange(block_s)
    keys = k_ref[b, n, pl.ds(offset, block_s), :].astype(jnp.float32)
    values = v_ref[b, n, pl.ds(offset, block_s), :].astype(jnp.float32)
    fresh = (slots >= first) & (slots < valid_len)  # not covered by an earlier block, valid
    values = jnp.where(fresh[:, None], values, 0.0)  # 0 * NaN would poison the sum
    s = jax.lax.dot_general(q, keys, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32)
    s = s * scale
    if softcap is not None:
      s = jnp.tanh(s / softcap) * softcap
    diff = q_slot[:, None] - slots[None, :]
    visible = fresh[None, :] & (diff >= 0) & q_live[:, None]
    if window is not None:
      visible &= diff < window
    s = jnp.where(visible, s, _NEG)
    m_new = jnp.maximum(m, jnp.max(s, axis=-1))
    safe = jnp.where(m_new == _NEG, 0.0, m_new)
    p = jnp.where(visible, jnp.exp(s - safe[:, None]), 0.0)
    rescale = jnp.exp(m - safe)
    norm = norm * rescale + jnp.sum(p, axis=-1)
    acc = acc * rescale[:, None] + jnp.dot(p, values, preferred_element_type=jnp.float32)
    return m_new, norm, acc

  init = (
    jnp.full((t * group,), _NEG, jnp.float32),
    jnp.zeros((t * group,), jnp.float32),
    jnp.zeros((t * group, k), jnp.float32),
  )
  _, norm, acc = jax.lax.fori_loop(0, pl.cdiv(valid_len, block_s), block, init)
  out = jnp.where(q_live[:, None], acc / jnp.where(norm > 0, norm, 1.0)[:, None], 0.0)
  o_ref[b, :, pl.ds(n * group, group), :] = out.reshape(t, group, k).astype(o_ref.dtype)


@functools.partial(jax.jit, static_argnames=("scale", "softcap", "window", "block_s", "interpret"))
def ragged_attention(
  q_BxTxHxK: jax.Array,
  k_BxNxSxK: jax.Array,
  v_BxNxSxK: jax.Array,
  start_B: jax.Array,
  num_q_B: jax.Array,
  *,
  scale: float,
  softcap: float | None = None,
  window: int | None = None,
  block_s: int = 128,
  interpret: bool = False,
) -> jax.Array:
  """Pallas ragged attention; see `reference.ref_ragged_attention` for the arguments."""
  b, t, h, k = q_BxTxHxK.shape
  n, capacity = k_BxNxSxK.shape[1], k_BxNxSxK.shape[2]
  if k_BxNxSxK.shape != (b, n, capacity, k) or v_BxNxSxK.shape != k_BxNxSxK.shape:
    raise ValueError(f"keys {k_BxNxSxK.shape} and values {v_BxNxSxK.shape} must be [B, N, S, K]")
  if h % n:
    raise ValueError(f"{h} query heads do not group over {n} KV heads")
  block_s = min(block_s, capacity)
  kernel = functools.partial(
    _kernel, scale=scale, softcap=softcap, window=window, block_s=block_s, group=h // n
  )
  out = jax.ShapeDtypeStruct(q_BxTxHxK.shape, q_BxTxHxK.dtype)
  return pl.pallas_call(kernel, out_shape=out, grid=(b, n), interpret=interpret)(
    start_B.astype(jnp.int32), num_q_B.astype(jnp.int32), q_BxTxHxK, k_BxNxSxK, v_BxNxSxK
  )
