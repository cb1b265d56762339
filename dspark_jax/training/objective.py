"""The training objective of each drafter over a batch of sequences, memory-bounded.

DSpark/DFlash: anchors are sampled per sequence (candidates: the anchor and its next token are
both in the loss mask; up to N, uniformly without replacement), the context keys/values are
computed once, and the blocks are processed in chunks of anchors under `jax.checkpoint`: a
chunk's [B, C, G, V] draft and target logits exist only while that chunk is computed, in the
forward and again in the backward pass, so the [B, A, G, V] float32 tensors of all anchors are
never alive at once. Eagle3: the training-time test with each step's logits checkpointed, its
loss taken on the same sampled anchors.

A batch is a dict of arrays: tokens [B, T] int32, loss_mask [B, T], features [B, T, m*D] and
hidden [B, T, D] (the target's final-normed hidden states; its logits are recomputed from them
through the frozen LM head), and optionally target_lse [B, T] (the log-sum-exp of the target's
logits over the whole vocabulary, from the target cache).

With a reduced draft vocabulary of N tokens (`drafters.draft_vocab`) the draft logits are N
columns of the target's head, and the losses compare the two distributions in that space
(`losses`). The target's log-probabilities of the N tokens then need its normaliser over all V:
from `target_lse` when the batch has it (N columns of the head per prediction), otherwise from
the full V-column logits (what online mode does).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from dspark_jax.drafters.draft_vocab import draft_logits, to_draft_index
from dspark_jax.drafters.dspark import anchor_candidates, supervised_slots
from dspark_jax.drafters.shared import lm_logits
from dspark_jax.training import losses


def target_log_probs(frozen: dict, hidden: jax.Array, target, lse: jax.Array | None = None):
  """The target's log-probabilities [..., N] over the drafter's space from its final-normed
  hidden states [..., D] (float32), under stop-gradient; `lse` [...]: the stored normaliser."""
  if lse is not None and "draft_head" in frozen:
    return losses.target_log_probs(draft_logits(frozen, hidden, target), target_lse=lse)
  return losses.target_log_probs(lm_logits(frozen, hidden, target), frozen.get("draft_ids"))


def sample_anchors(rng: jax.Array, loss_mask_BxT: jax.Array, num_anchors: int):
  """(anchors [B, N], valid [B, N]): up to N candidate positions per row, uniformly without
  replacement (the N largest of i.i.d. uniform scores), sorted by position."""
  cand = anchor_candidates(loss_mask_BxT)
  n = min(num_anchors, cand.shape[1])
  score = jnp.where(cand, jax.random.uniform(rng, cand.shape), -1.0)
  top, idx = jax.lax.top_k(score, n)
  valid = top >= 0.0
  # Invalid picks go last (position T) before sorting, then back to a harmless 0.
  order = jnp.sort(jnp.where(valid, idx, cand.shape[1]), axis=1)
  valid = order < cand.shape[1]
  return jnp.where(valid, order, 0).astype(jnp.int32), valid


def block_terms(drafter, params, batch, anchors_BxA, valid_BxA, anchor_chunk: int, remat=True):
  """Summed `losses.SlotTerms` of every anchor block, `anchor_chunk` anchors at a time.

  remat=False keeps every chunk's activations for the backward pass instead of recomputing
  them: about a third less LM-head work, at the memory of the unchunked loss.
  """
  tokens, hidden, lse = batch["tokens"], batch["hidden"], batch.get("target_lse")
  b, t = tokens.shape
  a = anchors_BxA.shape[1]
  g = drafter.draft_len
  c = min(anchor_chunk, a)
  pad = -a % c
  anchors = jnp.pad(anchors_BxA, ((0, 0), (0, pad)))
  valid = jnp.pad(valid_BxA, ((0, 0), (0, pad)))
  supervised = supervised_slots(anchors, batch["loss_mask"], g) & valid[..., None]
  slot_pos = anchors[..., None] + jnp.arange(g)  # [B, A, G]
  labels = jnp.take_along_axis(
    tokens[:, None, :].repeat(anchors.shape[1], 1), jnp.clip(slot_pos + 1, 0, t - 1), 2
  )
  chunks = lambda x: jnp.moveaxis(x.reshape(b, -1, c, *x.shape[2:]), 1, 0)  # [n, B, C, ...]
  frozen = params["frozen"]
  labels = to_draft_index(frozen, labels)

  def run(model):
    ctx = drafter.context(model, batch["features"])

    def chunk_terms(anchors_c, supervised_c, labels_c, pos_c):
      out = drafter.blocks(model, frozen, tokens, ctx, anchors_c)
      rows, pos = jnp.arange(b)[:, None, None], jnp.clip(pos_c, 0, t - 1)
      target_h = hidden[rows, pos].astype(jnp.float32)
      log_pt = target_log_probs(
        frozen, target_h, drafter.target, None if lse is None else lse[rows, pos]
      )
      return losses.slot_terms(out.logits, log_pt, labels_c, supervised_c, out.confidence_logits)

    if remat:
      chunk_terms = jax.checkpoint(chunk_terms)

    def body(total, xs):
      return losses.add_terms(total, chunk_terms(*xs)), None

    zero = jax.tree.map(
      jnp.zeros_like,
      jax.eval_shape(
        chunk_terms, *(x[0] for x in map(chunks, (anchors, supervised, labels, slot_pos)))
      ),
    )
    total, _ = jax.lax.scan(body, zero, tuple(map(chunks, (anchors, supervised, labels, slot_pos))))
    return total

  return drafter.bind(params, run)


def dspark_objective(
  drafter, params, batch, rng, *, num_anchors: int, anchor_chunk: int, remat: bool = True
):
  """(loss, LossReport) of DSpark (or DFlash: CE only) on a batch."""
  anchors, valid = sample_anchors(rng, batch["loss_mask"], num_anchors)
  terms = block_terms(drafter, params, batch, anchors, valid, anchor_chunk, remat)
  report = losses.dspark_loss(terms, drafter.config.kind)
  return report.loss, report


class Eagle3Report(NamedTuple):
  loss: jax.Array
  step_ce: jax.Array  # [J] soft CE per step
  soft_accept: jax.Array  # [J] mean 1 - ½||p_d - p_t||_1 per step (as DSpark's c*_k)
  expected_accepted: jax.Array  # [] mean over rounds of sum_k prod_{j<=k} soft acceptance


def eagle3_objective(
  drafter, params, batch, rng, *, num_steps: int, num_anchors: int, remat: bool = True
):
  """(loss, Eagle3Report) of Eagle3's training-time test on a batch.

  The loss is taken on sampled rounds: the same anchors as DSpark (`sample_anchors`), step j of
  the round at anchor a predicting x_{a+j+1}. The three drafters are then trained on the same
  number of supervised predictions per step, and both the LM head and the test's steps >= 1 run
  on [B, A] positions instead of [B, T] (`Eagle3Drafter.train_rounds`). With num_anchors >= T every round whose anchor is a candidate is kept (the
  full test also trains the round anchored at the last prompt token, which DSpark never does).
  """
  hidden, lse = batch["hidden"], batch.get("target_lse")
  b, t = batch["tokens"].shape
  anchors, picked = sample_anchors(rng, batch["loss_mask"], num_anchors)
  valid_JxBxT = losses.eagle3_valid(batch["loss_mask"], num_steps)
  rows = jnp.arange(b)[:, None]

  def reduce(j, normed_BxAxD):
    pos = jnp.clip(anchors + j, 0, t - 1)  # [B, A]
    frozen = params["frozen"]
    logits = draft_logits(frozen, normed_BxAxD, drafter.target)
    log_pt = target_log_probs(
      frozen,
      hidden[rows, pos].astype(jnp.float32),
      drafter.target,
      None if lse is None else lse[rows, pos],
    )
    valid = picked & valid_JxBxT[j][rows, pos] & (anchors + j < t)
    soft = losses.soft_label(jax.nn.log_softmax(logits), log_pt)
    soft = jnp.where(valid, soft, 0.0)
    step_loss = losses.eagle3_step_loss(logits, log_pt, valid)
    return (
      jnp.zeros((num_steps,)).at[j].set(step_loss),
      jnp.zeros((num_steps, *anchors.shape)).at[j].set(soft),
      jnp.zeros((num_steps, *anchors.shape), bool).at[j].set(valid),
    )

  per_step, soft_JxBxA, valid_JxBxA = drafter.train_rounds(
    params, batch["tokens"], batch["features"], anchors, num_steps, reduce, remat=remat
  )
  decay = losses.EAGLE3_STEP_DECAY ** jnp.arange(num_steps, dtype=jnp.float32)
  loss = jnp.sum(decay * per_step)
  counts = valid_JxBxA.sum(axis=(1, 2))
  rounds = jnp.maximum(counts[0], 1)
  report = Eagle3Report(
    loss,
    per_step,
    soft_JxBxA.sum(axis=(1, 2)) / jnp.maximum(counts, 1),
    jnp.cumprod(soft_JxBxA, axis=0).sum() / rounds,
  )
  return loss, report
