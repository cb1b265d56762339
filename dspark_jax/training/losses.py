"""Drafter losses (`docs/method.md` section 3), as functions of logits.

Per anchor block and slot k (0-based): the draft logits (corrected, U_k + B_k), the target's
log-probabilities at the same position (from its final hidden state, never stored), the label
(the regenerated token at anchor + k + 1) and whether the slot is supervised.

Both distributions live in the drafter's space of N tokens: the whole vocabulary (N = V), or a
reduced draft vocabulary (`drafters.draft_vocab`), where the drafter has no mass outside its
N tokens. Then L1 = sum over the N tokens of |p_d - p_t| plus the target's mass outside them,
exactly the distance over the full vocabulary, so the soft label is still the acceptance
probability; CE skips labels outside the N tokens (their log-probability is -inf), with its own
weight sum; Eagle3's soft CE runs over the N tokens (the outside mass cannot be matched). Slot weights are
w_k = exp(-k / 4) on supervised slots, and every term is normalised by the sum of its weights.

DSpark: 0.1 CE + 0.9 L1 + 1.0 confidence BCE, where L1 = ||p_d - p_t||_1 over the vocabulary and
the confidence label is c* = 1 - 0.5 L1 under stop-gradient. DFlash: CE only. Eagle3: soft CE
against the target's probabilities at each training-time-test step, step j weighted 0.8^j.

Letters: B batch, A anchors, G slots, V vocabulary, N the drafter's space (V or fewer), J
steps, T tokens.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

SLOT_DECAY = 4.0  # w_k = exp(-k / SLOT_DECAY)
WEIGHTS = {"ce": 0.1, "l1": 0.9, "confidence": 1.0}
EAGLE3_STEP_DECAY = 0.8


class SlotTerms(NamedTuple):
  """Weighted sums over supervised slots (sums, not means, so chunks can be added up)."""

  weight: jax.Array  # [] sum of w_k over supervised slots
  ce_weight: jax.Array  # [] sum of w_k over supervised slots whose label is in the draft space
  ce: jax.Array  # [] sum of w_k * CE
  l1: jax.Array  # [] sum of w_k * ||p_d - p_t||_1
  confidence: jax.Array  # [] sum of w_k * BCE(c_k, c*_k)
  soft_accept: jax.Array  # [G] sum over supervised blocks of c*_k
  count: jax.Array  # [G] supervised blocks per slot
  prefix_accept: jax.Array  # [] sum over blocks of sum_k prod_{i<=k} c*_i (expected accepted)
  blocks: jax.Array  # [] blocks with slot 0 supervised
  conf_error: jax.Array  # [] sum over supervised slots of |sigmoid(c_k) - c*_k|


def slot_weights(block_size: int) -> jax.Array:
  return jnp.exp(-jnp.arange(block_size, dtype=jnp.float32) / SLOT_DECAY)


def target_log_probs(target_logits_V: jax.Array, draft_ids_N=None, target_lse=None) -> jax.Array:
  """The target's log-probabilities [..., N] over the drafter's space, under stop-gradient.

  target_logits_V: [..., V] logits over the whole vocabulary, or, with `target_lse` [...] (the
  log-sum-exp over the whole vocabulary, stored by the target cache), [..., N] logits of the
  draft vocabulary's tokens only: the cheap form, N columns of the LM head instead of V.
  """
  logits = target_logits_V.astype(jnp.float32)
  if target_lse is not None:
    out = logits - target_lse.astype(jnp.float32)[..., None]
  else:
    out = jax.nn.log_softmax(logits, axis=-1)
    if draft_ids_N is not None:
      out = jnp.take(out, draft_ids_N, axis=-1)
  return jax.lax.stop_gradient(out)


def l1_distance(log_pd: jax.Array, log_pt: jax.Array) -> jax.Array:
  """||p_d - p_t||_1 over the whole vocabulary, from log-probabilities [..., N] over the drafter's
  space: the target's mass outside it (1 - sum p_t, zero up to rounding when N = V) counts in
  full, since the drafter puts none there."""
  p_t = jnp.exp(log_pt)
  outside = jnp.maximum(1.0 - jnp.sum(p_t, axis=-1), 0.0)
  return jnp.sum(jnp.abs(jnp.exp(log_pd) - p_t), axis=-1) + outside


def soft_label(log_pd: jax.Array, log_pt: jax.Array) -> jax.Array:
  """c* = 1 - ½||p_d - p_t||_1 (log-probabilities [..., N] in), under stop-gradient: the
  probability that the draft's token is accepted. Clipped only against rounding."""
  return jax.lax.stop_gradient(jnp.clip(1.0 - 0.5 * l1_distance(log_pd, log_pt), 0.0, 1.0))


def slot_terms(
  draft_logits_BxAxGxN: jax.Array,
  target_log_probs_BxAxGxN: jax.Array,
  labels_BxAxG: jax.Array,
  supervised_BxAxG: jax.Array,
  confidence_logits_BxAxG: jax.Array | None = None,
) -> SlotTerms:
  """Weighted loss sums of a set of blocks (all of them, or one chunk).

  labels_BxAxG are indices into the drafter's space (target ids when N = V), -1 for a label
  outside it (`draft_vocab.to_draft_index`).
  """
  g = draft_logits_BxAxGxN.shape[2]
  mask = supervised_BxAxG.astype(jnp.float32)
  w = slot_weights(g) * mask
  w_ce = w * (labels_BxAxG >= 0)
  log_pd = jax.nn.log_softmax(draft_logits_BxAxGxN.astype(jnp.float32), axis=-1)
  log_pt = target_log_probs_BxAxGxN.astype(jnp.float32)
  label = jnp.maximum(labels_BxAxG, 0)[..., None]
  ce = -jnp.take_along_axis(log_pd, label, axis=-1)[..., 0]
  l1 = l1_distance(log_pd, log_pt)
  soft = soft_label(log_pd, log_pt)
  if confidence_logits_BxAxG is None:
    bce = jnp.zeros_like(ce)
    conf_err = jnp.zeros_like(ce)
  else:
    z = confidence_logits_BxAxG.astype(jnp.float32)
    # BCE with logits, stable form: max(z, 0) - z * y + log(1 + exp(-|z|)).
    bce = jnp.maximum(z, 0.0) - z * soft + jnp.log1p(jnp.exp(-jnp.abs(z)))
    conf_err = jnp.abs(jax.nn.sigmoid(z) - soft)
  prefix = jnp.cumprod(jnp.where(mask > 0, soft, 0.0), axis=-1)
  return SlotTerms(
    weight=w.sum(),
    ce_weight=w_ce.sum(),
    ce=(w_ce * ce).sum(),
    l1=(w * l1).sum(),
    confidence=(w * bce).sum(),
    soft_accept=(mask * soft).sum(axis=(0, 1)),
    count=mask.sum(axis=(0, 1)),
    prefix_accept=prefix.sum(),
    blocks=mask[..., 0].sum(),
    conf_error=(mask * conf_err).sum(),
  )


def add_terms(a: SlotTerms, b: SlotTerms) -> SlotTerms:
  return jax.tree.map(jnp.add, a, b)


class LossReport(NamedTuple):
  loss: jax.Array
  ce: jax.Array
  l1: jax.Array
  confidence: jax.Array
  soft_accept: jax.Array  # [G] mean soft acceptance c*_k per slot
  expected_accepted: jax.Array  # [] mean sum_k prod c*: accepted drafts implied by the labels
  confidence_error: jax.Array  # [] mean |c_k - c*_k|


def dspark_loss(terms: SlotTerms, kind: str = "dspark") -> LossReport:
  """Normalised losses from summed terms; kind "dflash" keeps CE only."""
  norm = jnp.maximum(terms.weight, 1e-9)
  ce = terms.ce / jnp.maximum(terms.ce_weight, 1e-9)
  l1, conf = terms.l1 / norm, terms.confidence / norm
  if kind == "dspark":
    loss = WEIGHTS["ce"] * ce + WEIGHTS["l1"] * l1 + WEIGHTS["confidence"] * conf
  else:
    loss = ce
  return LossReport(
    loss,
    ce,
    l1,
    conf,
    terms.soft_accept / jnp.maximum(terms.count, 1.0),
    terms.prefix_accept / jnp.maximum(terms.blocks, 1.0),
    terms.conf_error / jnp.maximum(terms.count.sum(), 1.0),
  )


def eagle3_step_loss(logits_BxTxN, target_log_probs_BxTxN, valid_BxT) -> jax.Array:
  """Mean over valid positions of the soft CE -sum_n p_t log p_d of one step (over the drafter's
  space of N tokens)."""
  p_t = jnp.exp(target_log_probs_BxTxN.astype(jnp.float32))
  log_pd = jax.nn.log_softmax(logits_BxTxN.astype(jnp.float32), axis=-1)
  soft_ce = -jnp.sum(p_t * log_pd, axis=-1)
  valid = valid_BxT.astype(jnp.float32)
  return (soft_ce * valid).sum() / jnp.maximum(valid.sum(), 1.0)


def eagle3_loss(step_logits_JxBxTxN, target_log_probs_BxTxN, valid_JxBxT) -> jax.Array:
  """sum_j 0.8^j * `eagle3_step_loss` of step j."""
  per_step = jnp.stack(
    [
      eagle3_step_loss(step_logits_JxBxTxN[j], target_log_probs_BxTxN, valid_JxBxT[j])
      for j in range(step_logits_JxBxTxN.shape[0])
    ]
  )
  decay = EAGLE3_STEP_DECAY ** jnp.arange(per_step.shape[0], dtype=jnp.float32)
  return jnp.sum(decay * per_step)


def eagle3_valid(loss_mask_BxT: jax.Array, num_steps: int) -> jax.Array:
  """[J, B, T]: step j at position i is trained iff its round's anchor i - j exists and the
  tokens i - j + 1 .. i + 1 (teacher-forced inputs and the label) are all in the loss mask."""
  m = loss_mask_BxT.astype(bool)
  t = m.shape[1]
  label_ok = jnp.pad(m[:, 1:], ((0, 0), (0, 1)))  # position i's label i + 1 is supervised
  steps = []
  ok = label_ok
  for j in range(num_steps):
    if j > 0:
      # Step j at i also needs step j - 1 at i - 1 valid (its input chain).
      ok = label_ok & jnp.pad(ok[:, :-1], ((0, 0), (1, 0)))
    steps.append(ok & (jnp.arange(t) >= j)[None])
  return jnp.stack(steps)
