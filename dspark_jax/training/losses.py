"""Drafter losses (`docs/method.md` section 3), as functions of logits.

Per anchor block and slot k (0-based): the draft logits (corrected, U_k + B_k), the target's
logits at the same position (recomputed from its final hidden state, never stored), the label
(the regenerated token at anchor + k + 1) and whether the slot is supervised. Slot weights are
w_k = exp(-k / 4) on supervised slots, and every term is normalised by the sum of its weights.

DSpark: 0.1 CE + 0.9 L1 + 1.0 confidence BCE, where L1 = ||p_d - p_t||_1 over the vocabulary and
the confidence label is c* = 1 - 0.5 L1 under stop-gradient. DFlash: CE only. Eagle3: soft CE
against the target's probabilities at each training-time-test step, step j weighted 0.8^j.

Letters: B batch, A anchors, G slots, V vocabulary, J steps, T tokens.
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


def soft_label(log_pd: jax.Array, log_pt: jax.Array) -> jax.Array:
  """c* = 1 - ½||p_d - p_t||_1 over the last axis (log-probabilities in), under stop-gradient:
  the probability that the draft's token is accepted. Clipped only against rounding."""
  l1 = jnp.sum(jnp.abs(jnp.exp(log_pd) - jnp.exp(log_pt)), axis=-1)
  return jax.lax.stop_gradient(jnp.clip(1.0 - 0.5 * l1, 0.0, 1.0))


def slot_terms(
  draft_logits_BxAxGxV: jax.Array,
  target_logits_BxAxGxV: jax.Array,
  labels_BxAxG: jax.Array,
  supervised_BxAxG: jax.Array,
  confidence_logits_BxAxG: jax.Array | None = None,
) -> SlotTerms:
  """Weighted loss sums of a set of blocks (all of them, or one chunk)."""
  g = draft_logits_BxAxGxV.shape[2]
  mask = supervised_BxAxG.astype(jnp.float32)
  w = slot_weights(g) * mask
  log_pd = jax.nn.log_softmax(draft_logits_BxAxGxV.astype(jnp.float32), axis=-1)
  log_pt = jax.nn.log_softmax(target_logits_BxAxGxV.astype(jnp.float32), axis=-1)
  ce = -jnp.take_along_axis(log_pd, labels_BxAxG[..., None], axis=-1)[..., 0]
  l1 = jnp.sum(jnp.abs(jnp.exp(log_pd) - jnp.exp(log_pt)), axis=-1)
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
    ce=(w * ce).sum(),
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
  ce, l1, conf = terms.ce / norm, terms.l1 / norm, terms.confidence / norm
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


def eagle3_step_loss(logits_BxTxV, target_logits_BxTxV, valid_BxT) -> jax.Array:
  """Mean over valid positions of the soft CE -sum_v p_t log p_d of one step."""
  p_t = jax.nn.softmax(target_logits_BxTxV.astype(jnp.float32), axis=-1)
  log_pd = jax.nn.log_softmax(logits_BxTxV.astype(jnp.float32), axis=-1)
  soft_ce = -jnp.sum(p_t * log_pd, axis=-1)
  valid = valid_BxT.astype(jnp.float32)
  return (soft_ce * valid).sum() / jnp.maximum(valid.sum(), 1.0)


def eagle3_loss(step_logits_JxBxTxV, target_logits_BxTxV, valid_JxBxT) -> jax.Array:
  """sum_j 0.8^j * `eagle3_step_loss` of step j."""
  per_step = jnp.stack(
    [
      eagle3_step_loss(step_logits_JxBxTxV[j], target_logits_BxTxV, valid_JxBxT[j])
      for j in range(step_logits_JxBxTxV.shape[0])
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
