"""Pallas kernel: speculative verification over a flat token buffer with per-request segments.

One program per request. Every pass over the vocabulary goes tile by tile (`block_v` entries),
keeping running statistics (online log-sum-exp, running arg-max, residual mass), so no [rows, V]
softmax is ever materialised: memory beyond the inputs is O(block_v) per program.

Per request r with admitted length n = lengths[r] and rows o = offsets[r] ... o + n:
  1. slots k = 0, 1, ... while k < n and slot k is accepted: greedy compares the draft token
     with the target row's arg-max; sampling computes both row log-sum-exps (temperature
     applied) and tests log u_k < log p_t(x_k) - log p_d(x_k);
  2. the next token from row o + a (a = accepted count): greedy arg-max; or, after a rejection,
     arg-max over v of log(p_t - p_d)(v) + gumbel[r, v] (falling back to p_t when the residual
     mass is below the floor); or the bonus arg-max of log p_t + gumbel when all n passed.
Rows the segment does not cover are never read (tests fill them with NaN).

Only temperature is applied in-kernel; top-k/top-p need a sort and go through the XLA path
(`dispatch.verify_flat` routes them). Same signature as `reference.ref_verify_flat`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from dspark_jax.kernels.reference import RESIDUAL_FLOOR

_NEG = -jnp.inf


def _row_tile(ref, row, v0, block_v):
  return ref[pl.ds(row, 1), pl.ds(v0, block_v)][0].astype(jnp.float32)


def _row_argmax(ref, row, n_tiles, block_v, noise_ref=None, noise_row=None, scale=1.0):
  """arg-max over v of ref[row, v] * scale (+ noise), first index on ties; tile by tile."""

  def body(i, carry):
    best_val, best_idx = carry
    v0 = pl.multiple_of(i * block_v, block_v)
    vals = _row_tile(ref, row, v0, block_v) * scale
    if noise_ref is not None:
      vals = vals + _row_tile(noise_ref, noise_row, v0, block_v)
    tile_best = jnp.max(vals)
    tile_idx = v0 + jnp.argmax(vals).astype(jnp.int32)
    better = tile_best > best_val
    return jnp.where(better, tile_best, best_val), jnp.where(better, tile_idx, best_idx)

  return jax.lax.fori_loop(0, n_tiles, body, (jnp.float32(_NEG), jnp.int32(0)))[1]


def _row_logsumexp(ref, row, n_tiles, block_v, scale):
  """Online log-sum-exp of ref[row] * scale."""

  def body(i, carry):
    m, s = carry
    vals = _row_tile(ref, row, pl.multiple_of(i * block_v, block_v), block_v) * scale
    m_new = jnp.maximum(m, jnp.max(vals))
    safe = jnp.where(m_new == _NEG, 0.0, m_new)
    s = s * jnp.exp(m - safe) + jnp.sum(jnp.exp(vals - safe))
    return m_new, s

  m, s = jax.lax.fori_loop(0, n_tiles, body, (jnp.float32(_NEG), jnp.float32(0.0)))
  return m + jnp.log(s)


def _verify_kernel(
  offsets_ref,
  lengths_ref,
  tokens_ref,
  uniforms_ref,
  t_ref,
  d_ref,
  g_ref,
  num_ref,
  next_ref,
  *,
  max_len,
  temperature,
  block_v,
  n_tiles,
):
  r = pl.program_id(0)
  off = offsets_ref[r]
  n = jnp.minimum(lengths_ref[r], max_len)
  greedy = temperature == 0.0
  scale = 1.0 if greedy else 1.0 / temperature

  def accepted(k):
    row = off + k
    x = tokens_ref[row]
    if greedy:
      return _row_argmax(t_ref, row, n_tiles, block_v) == x
    lse_t = _row_logsumexp(t_ref, row, n_tiles, block_v, scale)
    lse_d = _row_logsumexp(d_ref, row, n_tiles, block_v, scale)
    log_ratio = (t_ref[row, x] * scale - lse_t) - (d_ref[row, x] * scale - lse_d)
    return jnp.log(uniforms_ref[row]) < log_ratio

  def cond(carry):
    k, still = carry
    return still & (k < n)

  def body(carry):
    k, _ = carry
    ok = accepted(k)
    return jnp.where(ok, k + 1, k), ok

  a, _ = jax.lax.while_loop(cond, body, (jnp.int32(0), jnp.bool_(True)))
  row = off + a
  if greedy:
    token = _row_argmax(t_ref, row, n_tiles, block_v)
  else:
    bonus = _row_argmax(t_ref, row, n_tiles, block_v, g_ref, r, scale)

    def residual_draw():
      lse_t = _row_logsumexp(t_ref, row, n_tiles, block_v, scale)
      lse_d = _row_logsumexp(d_ref, row, n_tiles, block_v, scale)

      def tile(i, carry):
        best_val, best_idx, mass = carry
        v0 = pl.multiple_of(i * block_v, block_v)
        lpt = _row_tile(t_ref, row, v0, block_v) * scale - lse_t
        lpd = _row_tile(d_ref, row, v0, block_v) * scale - lse_d
        ahead = lpd < lpt
        log_res = jnp.where(
          ahead, lpt + jnp.log1p(-jnp.exp(jnp.where(ahead, lpd - lpt, -1.0))), _NEG
        )
        vals = log_res + _row_tile(g_ref, r, v0, block_v)
        tile_best = jnp.max(vals)
        better = tile_best > best_val
        return (
          jnp.where(better, tile_best, best_val),
          jnp.where(better, v0 + jnp.argmax(vals).astype(jnp.int32), best_idx),
          mass + jnp.sum(jnp.exp(log_res)),
        )

      init = (jnp.float32(_NEG), jnp.int32(0), jnp.float32(0.0))
      _, idx, mass = jax.lax.fori_loop(0, n_tiles, tile, init)
      return jnp.where(mass < RESIDUAL_FLOOR, bonus, idx)

    token = jax.lax.cond(a < n, residual_draw, lambda: bonus)
  num_ref[r] = a
  next_ref[r] = token


@functools.partial(jax.jit, static_argnames=("max_len", "temperature", "block_v", "interpret"))
def verify_flat(
  target_logits_NxV: jax.Array,
  draft_logits_NxV: jax.Array,
  draft_tokens_N: jax.Array,
  uniforms_N: jax.Array,
  gumbel_RxV: jax.Array,
  offsets_R: jax.Array,
  lengths_R: jax.Array,
  *,
  max_len: int,
  temperature: float,
  block_v: int = 512,
  interpret: bool = False,
) -> tuple[jax.Array, jax.Array]:
  """Pallas verification; see `reference.ref_verify_flat` for the arguments."""
  n_rows, vocab = target_logits_NxV.shape
  if draft_logits_NxV.shape != (n_rows, vocab):
    raise ValueError(f"draft logits {draft_logits_NxV.shape} != target {(n_rows, vocab)}")
  if draft_tokens_N.shape != (n_rows,) or uniforms_N.shape != (n_rows,):
    raise ValueError("draft_tokens and uniforms need one entry per buffer row")
  if gumbel_RxV.shape != (offsets_R.shape[0], vocab) or lengths_R.shape != offsets_R.shape:
    raise ValueError("gumbel needs [R, V]; offsets and lengths one entry per request")
  if temperature < 0:
    raise ValueError(f"temperature must be >= 0, got {temperature}")
  pad = -vocab % block_v
  if pad:  # -inf logits have probability 0 in both distributions and never win an arg-max
    target_logits_NxV = jnp.pad(target_logits_NxV, ((0, 0), (0, pad)), constant_values=_NEG)
    draft_logits_NxV = jnp.pad(draft_logits_NxV, ((0, 0), (0, pad)), constant_values=_NEG)
    gumbel_RxV = jnp.pad(gumbel_RxV, ((0, 0), (0, pad)))
  n_req = offsets_R.shape[0]
  kernel = functools.partial(
    _verify_kernel,
    max_len=max_len,
    temperature=float(temperature),
    block_v=block_v,
    n_tiles=(vocab + pad) // block_v,
  )
  out = jax.ShapeDtypeStruct((n_req,), jnp.int32)
  return pl.pallas_call(kernel, out_shape=(out, out), grid=(n_req,), interpret=interpret)(
    offsets_R.astype(jnp.int32),
    lengths_R.astype(jnp.int32),
    draft_tokens_N.astype(jnp.int32),
    uniforms_N.astype(jnp.float32),
    target_logits_NxV,
    draft_logits_NxV,
    gumbel_RxV.astype(jnp.float32),
  )
