"""Plain-jnp references of the Pallas kernels, with the kernels' signatures.

`ref_verify_flat` is verification over a flat token buffer with per-request segments: request r
owns rows [offsets[r], offsets[r] + lengths[r]] of the buffer, its lengths[r] admitted draft
slots followed by the bonus slot. Rows outside every segment (and the draft row of a bonus slot)
are never read, so they may hold anything, NaN included. Randomness comes in as inputs: one
acceptance uniform per draft row and one Gumbel vector per request, so the kernel and this
reference can be compared exactly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

RESIDUAL_FLOOR = 1e-7  # as in decoding/verify.py: below this residual mass, draw from p_t


def ref_verify_flat(
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
  """Returns (num_accepted [R], next_token [R]); `block_v`, `interpret` are the kernel's knobs.

  Args:
    target_logits_NxV: target logits; row offsets[r] + k scores slot k of request r.
    draft_logits_NxV: raw draft logits of slot k in row offsets[r] + k (k < lengths[r]).
    draft_tokens_N: draft token of slot k in row offsets[r] + k.
    uniforms_N: acceptance uniform in (0, 1) of slot k in row offsets[r] + k.
    gumbel_RxV: Gumbel noise for request r's final draw (replacement or bonus).
    offsets_R, lengths_R: segments; lengths[r] in [0, max_len].
    max_len: the largest segment length the caller allows (static; G).
    temperature: 0 for greedy, else the sampling temperature (no top-k/top-p on this path).
  """
  del block_v, interpret
  n_rows = target_logits_NxV.shape[0]
  slots = jnp.arange(max_len + 1)
  rows_RxS = jnp.clip(offsets_R[:, None] + slots[None], 0, n_rows - 1)
  admitted_RxG = slots[None, :max_len] < lengths_R[:, None]
  t = target_logits_NxV[rows_RxS]  # [R, G+1, V]
  tokens = draft_tokens_N[rows_RxS[:, :max_len]]
  take = lambda x, i: jnp.take_along_axis(x, i[..., None], axis=-1)[..., 0]
  if temperature == 0.0:
    best = jnp.argmax(t, axis=-1).astype(jnp.int32)
    ok = admitted_RxG & (tokens == best[:, :max_len])
    num = jnp.sum(jnp.cumprod(ok.astype(jnp.int32), axis=1), axis=1)
    return num, take(best, num)

  lp_t = jax.nn.log_softmax(t / temperature, axis=-1)
  lp_d = jax.nn.log_softmax(draft_logits_NxV[rows_RxS[:, :max_len]] / temperature, axis=-1)
  ratio = take(lp_t[:, :max_len], tokens) - take(lp_d, tokens)
  ok = admitted_RxG & (jnp.log(uniforms_N[rows_RxS[:, :max_len]]) < ratio)
  num = jnp.sum(jnp.cumprod(ok.astype(jnp.int32), axis=1), axis=1)

  at = lambda x: jnp.take_along_axis(x, num[:, None, None], axis=1)[:, 0]
  lpt_a = at(lp_t)
  lpd_a = at(jnp.pad(lp_d, ((0, 0), (0, 1), (0, 0)), constant_values=-jnp.inf))
  ahead = lpd_a < lpt_a
  log_res = jnp.where(
    ahead, lpt_a + jnp.log1p(-jnp.exp(jnp.where(ahead, lpd_a - lpt_a, -1.0))), -jnp.inf
  )
  mass = jnp.sum(jnp.exp(log_res), axis=-1)
  use_target = (num >= lengths_R) | (mass < RESIDUAL_FLOOR)
  weights = jnp.where(use_target[:, None], lpt_a, log_res)
  return num, jnp.argmax(weights + gumbel_RxV, axis=-1).astype(jnp.int32)


def ref_ragged_attention(
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
  """Attention of each row's first num_q[b] queries over its KV cache; returns [B, T, H, K].

  Args:
    q_BxTxHxK: queries; query t of row b sits in cache slot start[b] + t.
    k_BxNxSxK, v_BxNxSxK: the cache, this step's keys and values already written; slots at or
      past start[b] + num_q[b] are never used (they may hold anything, NaN included).
    start_B: slots before the row's first query (its context length).
    num_q_B: live queries of each row (0..T); the rest of its queries get zeros.
    scale: score scale (1 / sqrt(head_dim) unless the model says otherwise).
    softcap: tanh soft-capping of the scores (Gemma), or None.
    window: a query sees only slots with (query slot - slot) < window, or None.
    block_s, interpret: the kernel's knobs (unused here).
  """
  del block_s, interpret
  b, t, h, kd = q_BxTxHxK.shape
  n, s = k_BxNxSxK.shape[1], k_BxNxSxK.shape[2]
  slots = jnp.arange(s)
  valid_len = start_B + num_q_B
  live_BxT = jnp.arange(t)[None, :] < num_q_B[:, None]
  diff_BxTxS = (start_B[:, None] + jnp.arange(t))[:, :, None] - slots[None, None, :]
  visible = (
    (diff_BxTxS >= 0) & (slots[None, None, :] < valid_len[:, None, None]) & live_BxT[..., None]
  )
  if window is not None:
    visible &= diff_BxTxS < window
  in_range = (slots[None, :] < valid_len[:, None])[:, None, :, None]  # [B, 1, S, 1]
  keys = jnp.where(in_range, k_BxNxSxK, 0.0).astype(jnp.float32)
  values = jnp.where(in_range, v_BxNxSxK, 0.0).astype(jnp.float32)
  q = q_BxTxHxK.reshape(b, t, n, h // n, kd).astype(jnp.float32)
  scores = jnp.einsum("btngk,bnsk->bngts", q, keys) * scale
  if softcap is not None:
    scores = jnp.tanh(scores / softcap) * softcap
  mask = visible[:, None, None]
  scores = jnp.where(mask, scores, -jnp.inf)
  top = jnp.max(scores, axis=-1, keepdims=True)
  weights = jnp.where(mask, jnp.exp(scores - jnp.where(jnp.isfinite(top), top, 0.0)), 0.0)
  total = jnp.sum(weights, axis=-1, keepdims=True)
  out = jnp.einsum("bngts,bnsk->btngk", weights / jnp.where(total > 0, total, 1.0), values)
  out = jnp.where(live_BxT[:, :, None, None, None], out, 0.0)
  return out.reshape(b, t, h, kd).astype(q_BxTxHxK.dtype)
