"""Verification of a block of draft tokens against the target (the XLA reference path).

Greedy: accept draft tokens while each equals the target's argmax; the next token is the
target's argmax after the accepted prefix.

Sampling (T > 0), lossless: draft token x_k (sampled from p_d) is accepted with probability
min(1, p_t(x_k) / p_d(x_k)); the first rejection is replaced by a draw from
norm(max(0, p_t - p_d)); if every admitted token passes, a bonus token is drawn from p_t. Both
p_t and p_d are the *filtered* distributions (`sampling.filter_logits`: temperature, top-k,
top-p applied alike to both), so the output follows the filtered target distribution exactly.
Everything stays in log space; draws use the Gumbel-max trick; when the residual has (almost)
no mass, p_d ~ p_t at that slot and we draw from p_t instead (the reference implementation's
guard; the case has probability ~0 of being reached after a rejection).

The sampling path lays the block out as the flat token buffer with one segment per row and
calls `kernels.dispatch.verify_flat`: the Pallas kernel on TPU/GPU, its jnp reference on CPU.

Randomness: the acceptance uniform of the draft token at position p is keyed by
(seed, request, p); the Gumbel noise of the round's final draw by (seed, request, first draft
position); each with a stream tag. Results never depend on batch mates.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dspark_jax.decoding.sampling import SamplingParams, filter_logits, token_keys
from dspark_jax.kernels import dispatch

ACCEPT_STREAM = 1
RESAMPLE_STREAM = 2


def slot_keys(seed, request_ids_B, first_position_B, num_slots: int, stream: int):
  """Keys [B, num_slots] for positions first_position + k, in the given stream."""
  keys = jax.vmap(lambda k: token_keys(seed, request_ids_B, first_position_B + k), out_axes=1)(
    jnp.arange(num_slots)
  )
  return jax.vmap(jax.vmap(lambda key: jax.random.fold_in(key, stream)))(keys)


def admitted_prefix(ok_BxG: jax.Array) -> jax.Array:
  """Length of the leading run of True per row: [B] int32."""
  return jnp.sum(jnp.cumprod(ok_BxG.astype(jnp.int32), axis=1), axis=1)


def verify(
  target_logits_BxG1xV: jax.Array,
  draft_tokens_BxG: jax.Array,
  draft_logits_BxGxV: jax.Array,
  lengths_B: jax.Array,
  sampling: SamplingParams,
  seed: jax.Array,
  request_ids_B: jax.Array,
  first_position_B: jax.Array,
) -> tuple[jax.Array, jax.Array]:
  """Decides how many draft tokens each row keeps and draws the token that follows them.

  Args:
    target_logits_BxG1xV: target logits at the anchor and after each draft token; slot k
      predicts the token at position first_position + k.
    draft_tokens_BxG: the proposed tokens (slot k at position first_position + k). G = 0 is a
      round without drafts (the decode loop's plain rounds): only the anchor's logits are read,
      and the draw is the one a G-slot verification makes when every length is 0.
    draft_logits_BxGxV: the raw logits each draft token was sampled from (before filtering;
      one-hot drafters give 0 at the token and -inf elsewhere).
    lengths_B: how many leading draft tokens are admitted for verification (0..G).
    sampling: the sampling parameters, shared by target and drafter.
    seed, request_ids_B, first_position_B: key the random draws.

  Returns:
    num_accepted [B] int32 in [0, lengths] and next_token [B] int32 (the replacement at the
    first rejection, or the bonus token).
  """
  b, g = draft_tokens_BxG.shape
  if g == 0:
    return _next_after_no_drafts(
      target_logits_BxG1xV[:, 0], sampling, seed, request_ids_B, first_position_B
    )
  admitted = jnp.arange(g)[None, :] < lengths_B[:, None]
  if sampling.greedy:
    target_best = jnp.argmax(target_logits_BxG1xV, axis=-1).astype(jnp.int32)
    num_accepted = admitted_prefix(admitted & (draft_tokens_BxG == target_best[:, :g]))
    return num_accepted, jnp.take_along_axis(target_best, num_accepted[:, None], axis=1)[:, 0]

  # Filtering (temperature, top-k, top-p) happens here, alike for both; the flat-buffer
  # verifier then works at temperature 1 on the filtered logits.
  target = filter_logits(target_logits_BxG1xV, sampling)
  draft = filter_logits(draft_logits_BxGxV, sampling)
  v = target.shape[-1]
  uniforms = jax.vmap(jax.vmap(jax.random.uniform))(
    slot_keys(seed, request_ids_B, first_position_B, g, ACCEPT_STREAM)
  )
  gumbel = _final_gumbel(seed, request_ids_B, first_position_B, v)
  pad_slot = lambda x, value: jnp.concatenate([x, jnp.full_like(x[:, :1], value)], axis=1).reshape(
    b * (g + 1), *x.shape[2:]
  )
  return dispatch.verify_flat(
    target.reshape(b * (g + 1), v),
    pad_slot(draft, 0.0),
    pad_slot(draft_tokens_BxG, 0),
    pad_slot(uniforms, 0.5),
    gumbel,
    jnp.arange(b, dtype=jnp.int32) * (g + 1),
    lengths_B.astype(jnp.int32),
    max_len=g,
    temperature=1.0,
  )


def _final_gumbel(seed, request_ids_B, first_position_B, vocab: int) -> jax.Array:
  """[B, V] Gumbel noise of the round's final draw (replacement or bonus), keyed by the round's
  first draft position (unique per round since positions only grow): fixed before acceptance."""
  keys = token_keys(seed, request_ids_B, first_position_B)
  keys = jax.vmap(lambda key: jax.random.fold_in(key, RESAMPLE_STREAM))(keys)
  return jax.vmap(lambda key: jax.random.gumbel(key, (vocab,)))(keys)


def _next_after_no_drafts(target_logits_BxV, sampling, seed, request_ids_B, first_position_B):
  """A round that verifies nothing (a plain step): the bonus draw from the target alone, the
  same token `verify` draws when every row's length is 0, without the G draft slots' work."""
  b = target_logits_BxV.shape[0]
  if sampling.greedy:
    return jnp.zeros(b, jnp.int32), jnp.argmax(target_logits_BxV, axis=-1).astype(jnp.int32)
  target = jax.nn.log_softmax(filter_logits(target_logits_BxV, sampling), axis=-1)
  gumbel = _final_gumbel(seed, request_ids_B, first_position_B, target.shape[-1])
  return jnp.zeros(b, jnp.int32), jnp.argmax(target + gumbel, axis=-1).astype(jnp.int32)
