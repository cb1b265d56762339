"""Training objectives: anchor sampling rules, chunked == unchunked (values and gradients)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dspark_jax.data.target_cache import online_features, target_lse
from dspark_jax.drafters import draft_vocab
from dspark_jax.drafters.dspark import supervised_slots
from dspark_jax.drafters.shared import lm_logits
from dspark_jax.training import losses
from dspark_jax.training.objective import (
  block_terms,
  dspark_objective,
  eagle3_objective,
  sample_anchors,
)
from tests.tiny import tiny_model
from tests.tiny_drafters import random_drafter

T = 14
SMALL = {"num_layers": 1, "target_layer_ids": (-1, 0)}  # small graphs compile fast


def batch_for(config, params, drafter, seed=0):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(0, config.vocab_size, (2, T)).astype(np.int32)
  mask = np.zeros((2, T), np.int32)
  mask[0, 4:] = 1
  mask[1, 2:11] = 1
  feats, hidden = online_features(params, tokens, config, drafter.feature_layers)
  return {"tokens": tokens, "loss_mask": mask, "features": feats, "hidden": hidden}


def test_anchor_sampling_follows_the_rules():
  mask = jnp.array([[0, 0, 1, 1, 1, 1, 0, 1], [0, 0, 0, 0, 0, 0, 1, 1]])
  candidates = [{2, 3, 4}, {6}]  # anchor and next token both in the mask
  seen = [set(), set()]
  for s in range(30):
    anchors, valid = sample_anchors(jax.random.key(s), mask, 2)
    for r in range(2):
      picked = [int(a) for a, v in zip(anchors[r], valid[r], strict=True) if v]
      assert len(picked) == min(2, len(candidates[r])) and len(set(picked)) == len(picked)
      assert set(picked) <= candidates[r] and picked == sorted(picked)
      seen[r] |= set(picked)
  assert seen == candidates  # every candidate gets drawn


def test_chunked_terms_and_gradients_equal_unchunked():
  config, params = tiny_model("qwen3")
  drafter, dparams = random_drafter("dspark-gated", config, params, **SMALL)
  batch = batch_for(config, params, drafter)
  anchors, valid = sample_anchors(jax.random.key(0), batch["loss_mask"], 6)

  def loss(trainable, chunk, remat):
    p = {**dparams, "trainable": trainable}
    return losses.dspark_loss(block_terms(drafter, p, batch, anchors, valid, chunk, remat)).loss

  value_and_grad = jax.jit(jax.value_and_grad(loss), static_argnums=(1, 2))
  whole, g_whole = value_and_grad(dparams["trainable"], 6, True)
  for remat in (True, False):
    parts, g_parts = value_and_grad(dparams["trainable"], 4, remat)  # 2 chunks, one padded
    np.testing.assert_allclose(parts, whole, rtol=1e-6)
    jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7), g_parts, g_whole
    )


@pytest.mark.parametrize("vocab", ["full", "reduced", "reduced, stored lse"])
def test_dspark_objective_equals_the_loss_of_train_forward_logits(vocab):
  """Also with a reduced draft vocabulary (every third token): the drafter's logits are the
  full drafter's at those tokens, and the target's log-probabilities come from its V logits or
  from N of them and the cache's log-sum-exp."""
  config, params = tiny_model("llama")
  drafter, dparams = random_drafter("dspark-markov", config, params, **SMALL)
  batch = batch_for(config, params, drafter, seed=1)
  ids = None
  model, mparams = drafter, dparams
  if vocab != "full":
    ids = np.arange(1, config.vocab_size, 3, dtype=np.int32)
    model, mparams = draft_vocab.restrict(drafter, dparams, ids)
  if vocab.endswith("lse"):
    batch = {**batch, "target_lse": target_lse(params, batch["hidden"], config)}
  rng = jax.random.key(3)
  objective = jax.jit(
    lambda p, b, r: dspark_objective(model, p, b, r, num_anchors=5, anchor_chunk=2)
  )
  loss, report = objective(mparams, batch, rng)
  anchors, valid = sample_anchors(rng, batch["loss_mask"], 5)
  out = jax.jit(drafter.train_forward)(dparams, batch["tokens"], batch["features"], anchors)
  g = drafter.draft_len
  pos = np.clip(np.asarray(anchors)[..., None] + np.arange(g), 0, T - 1)
  rows = np.arange(2)[:, None, None]
  target = lm_logits(dparams["frozen"], batch["hidden"].astype(jnp.float32)[rows, pos], config)
  labels = np.asarray(batch["tokens"][rows, np.clip(pos + 1, 0, T - 1)])
  sup = supervised_slots(anchors, batch["loss_mask"], g) & valid[..., None]
  logits = out.logits
  if ids is not None:
    logits = logits[..., ids]
    labels = np.where(np.isin(labels, ids), np.searchsorted(ids, labels), -1)
    assert (labels < 0).any() and (labels >= 0).any()  # both kinds of label occur
  want = losses.dspark_loss(
    losses.slot_terms(
      logits, losses.target_log_probs(target, ids), labels, sup, out.confidence_logits
    )
  )
  np.testing.assert_allclose(loss, want.loss, rtol=1e-5)
  np.testing.assert_allclose(report.soft_accept, want.soft_accept, rtol=1e-5)


def test_eagle3_objective_equals_a_float64_loop_over_its_rounds():
  """The anchored loss and report, against the full step logits and a NumPy loop over rounds."""
  config, params = tiny_model("llama")
  drafter, dparams = random_drafter("eagle3", config, params, target_layer_ids=(-1, 0))
  batch = batch_for(config, params, drafter, seed=2)
  rng = jax.random.key(5)
  objective = jax.jit(lambda p, b: eagle3_objective(drafter, p, b, rng, num_steps=3, num_anchors=4))
  loss, report = objective(dparams, batch)
  steps = np.asarray(
    jax.jit(drafter.train_forward, static_argnums=3)(
      dparams, batch["tokens"], batch["features"], 3
    ),
    np.float64,
  )
  target = np.asarray(
    lm_logits(dparams["frozen"], batch["hidden"].astype(jnp.float32), config), np.float64
  )
  valid = np.asarray(losses.eagle3_valid(jnp.asarray(batch["loss_mask"]), 3))
  anchors, picked = map(np.asarray, sample_anchors(rng, jnp.asarray(batch["loss_mask"]), 4))
  softmax = lambda x: np.exp(x - x.max()) / np.exp(x - x.max()).sum()
  ce, soft, prefix = [[] for _ in range(3)], [[] for _ in range(3)], []
  for b, a in zip(*np.nonzero(picked), strict=True):
    alive = 1.0
    for j in range(3):
      i = anchors[b, a] + j
      if i >= steps.shape[2] or not valid[j, b, i]:
        break
      p_t, p_d = softmax(target[b, i]), softmax(steps[j, b, i])
      ce[j].append(-(p_t * np.log(p_d)).sum())
      soft[j].append(1 - 0.5 * np.abs(p_d - p_t).sum())
      alive *= soft[j][-1]
      prefix.append(alive)
  assert all(len(x) for x in ce)  # every step has rounds
  np.testing.assert_allclose(report.step_ce, [np.mean(x) for x in ce], rtol=1e-5)
  np.testing.assert_allclose(report.soft_accept, [np.mean(x) for x in soft], rtol=1e-5)
  np.testing.assert_allclose(report.expected_accepted, sum(prefix) / len(ce[0]), rtol=1e-5)
  np.testing.assert_allclose(loss, sum(0.8**j * np.mean(ce[j]) for j in range(3)), rtol=1e-5)
  grads = jax.jit(jax.grad(lambda tr: objective({**dparams, "trainable": tr}, batch)[0]))(
    dparams["trainable"]
  )
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(grads))
  kept = lambda tr: eagle3_objective(
    drafter, {**dparams, "trainable": tr}, batch, rng, num_steps=3, num_anchors=4, remat=False
  )[0]
  jax.tree.map(  # without rematerialisation: the same gradients
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7),
    jax.jit(jax.grad(kept))(dparams["trainable"]),
    grads,
  )
