"""Drafter losses against float64 NumPy references written independently here."""

import jax
import jax.numpy as jnp
import numpy as np

from dspark_jax.training.losses import (
  add_terms,
  dspark_loss,
  eagle3_loss,
  eagle3_valid,
  slot_terms,
  target_log_probs,
)

B, A, G, V = 2, 3, 5, 11


def softmax64(x):
  x = np.asarray(x, np.float64)
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def reference_dspark(draft, target, labels, sup, conf):
  """Loop over every block and slot in float64."""
  tot = {"w": 0.0, "ce": 0.0, "l1": 0.0, "bce": 0.0}
  for b in range(B):
    for a in range(A):
      for k in range(G):
        if not sup[b, a, k]:
          continue
        w = np.exp(-k / 4.0)
        pd, pt = softmax64(draft[b, a, k]), softmax64(target[b, a, k])
        l1 = np.abs(pd - pt).sum()
        y = 1 - 0.5 * l1
        c = 1 / (1 + np.exp(-np.float64(conf[b, a, k])))
        tot["w"] += w
        tot["ce"] += w * -np.log(pd[labels[b, a, k]])
        tot["l1"] += w * l1
        tot["bce"] += w * -(y * np.log(c) + (1 - y) * np.log(1 - c))
  ce, l1, bce = tot["ce"] / tot["w"], tot["l1"] / tot["w"], tot["bce"] / tot["w"]
  return 0.1 * ce + 0.9 * l1 + bce, ce, l1, bce


def inputs(seed=0):
  rng = np.random.default_rng(seed)
  draft = rng.normal(0, 2, (B, A, G, V)).astype(np.float32)
  target = (draft + rng.normal(0, 1.5, (B, A, G, V))).astype(np.float32)
  labels = rng.integers(0, V, (B, A, G))
  sup = np.cumprod(rng.random((B, A, G)) < 0.85, axis=-1).astype(bool)
  sup[0, 0] = True
  conf = rng.normal(0, 2, (B, A, G)).astype(np.float32)
  return draft, target, labels, sup, conf


def log_pt(target):
  return jax.nn.log_softmax(jnp.asarray(target), axis=-1)


def test_dspark_and_dflash_losses_match_float64_reference():
  draft, target, labels, sup, conf = inputs()
  report = dspark_loss(slot_terms(draft, log_pt(target), labels, sup, conf))
  want = reference_dspark(draft, target, labels, sup, conf)
  np.testing.assert_allclose(
    [report.loss, report.ce, report.l1, report.confidence], want, rtol=2e-5
  )
  dflash = dspark_loss(slot_terms(draft, log_pt(target), labels, sup), kind="dflash")
  np.testing.assert_allclose(dflash.loss, want[1], rtol=2e-5)


def test_draft_space_losses_equal_full_vocabulary_losses_of_a_draft_with_no_mass_outside():
  """A reduced draft vocabulary: the drafter's logits over N of the V tokens. The reference is
  the full-vocabulary loss of the same draft with -inf logits outside, in float64: L1 and the
  soft labels over all V tokens; CE only where the label is inside (elsewhere it is infinite)."""
  draft, target, labels, sup, conf = inputs(4)
  ids = np.array([0, 2, 3, 5, 8, 9])  # N = 6 of V = 11
  full_draft = np.full_like(draft, -np.inf)
  full_draft[..., ids] = draft[..., ids]
  inside = np.isin(labels, ids)
  index = np.where(inside, np.searchsorted(ids, labels), -1)
  # Both forms of the target's log-probabilities: from all V logits, and from N logits plus
  # the stored log-sum-exp.
  lse = jax.nn.logsumexp(jnp.asarray(target), axis=-1)
  forms = [target_log_probs(target, ids), target_log_probs(target[..., ids], target_lse=lse)]
  np.testing.assert_allclose(forms[0], forms[1], rtol=1e-5, atol=1e-6)
  for log_pt_N in forms:
    report = dspark_loss(slot_terms(draft[..., ids], log_pt_N, index, sup, conf))
    _, _, l1, bce = reference_dspark(full_draft, target, np.where(inside, labels, 0), sup, conf)
    ce_ref = reference_dspark(full_draft, target, labels, sup & inside, conf)[1]
    np.testing.assert_allclose([report.ce, report.l1, report.confidence], [ce_ref, l1, bce], 2e-5)
    soft = 1 - 0.5 * np.abs(softmax64(full_draft) - softmax64(target)).sum(-1)
    np.testing.assert_allclose(report.soft_accept[0], soft[..., 0][sup[..., 0]].mean(), 1e-5)
  # A test of the test: leaving the outside mass out of L1 is caught.
  wrong = dspark_loss(slot_terms(draft[..., ids], log_pt(target[..., ids]), index, sup, conf))
  assert abs(float(wrong.l1) - l1) > 1e-2


def test_chunked_sums_equal_the_whole():
  draft, target, labels, sup, conf = inputs(1)
  whole = dspark_loss(slot_terms(draft, log_pt(target), labels, sup, conf))
  parts = [
    slot_terms(draft[:, s], log_pt(target[:, s]), labels[:, s], sup[:, s], conf[:, s])
    for s in (slice(0, 1), slice(1, 3))
  ]
  chunked = dspark_loss(add_terms(*parts))
  for a, b in zip(whole, chunked, strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_soft_label_statistics():
  draft, target, labels, sup, conf = inputs(2)
  report = dspark_loss(slot_terms(draft, log_pt(target), labels, sup, conf))
  soft = 1 - 0.5 * np.abs(softmax64(draft) - softmax64(target)).sum(-1)
  for k in range(G):
    np.testing.assert_allclose(report.soft_accept[k], soft[..., k][sup[..., k]].mean(), rtol=1e-5)
  prefix = np.cumprod(np.where(sup, soft, 0.0), axis=-1).sum(-1)  # per block
  np.testing.assert_allclose(report.expected_accepted, prefix[sup[..., 0]].mean(), rtol=1e-5)


def test_eagle3_loss_matches_float64_reference():
  rng = np.random.default_rng(3)
  j, t = 3, 9
  steps = rng.normal(0, 2, (j, B, t, V)).astype(np.float32)
  target = rng.normal(0, 2, (B, t, V)).astype(np.float32)
  mask = np.ones((B, t), bool)
  mask[0, :3] = False  # a prompt span
  mask[1, 6] = False
  valid = np.asarray(eagle3_valid(jnp.asarray(mask), j))
  want = 0.0
  for s in range(j):
    cells = [(b, i) for b in range(B) for i in range(t) if valid[s, b, i]]
    # Hand rule: anchor i - s exists and tokens i - s + 1 .. i + 1 are all supervised.
    for b in range(B):
      for i in range(t):
        expect = i - s >= 0 and i + 1 < t and all(mask[b, p] for p in range(i - s + 1, i + 2))
        assert bool(valid[s, b, i]) == expect, (s, b, i)
    ce = [-(softmax64(target[b, i]) * np.log(softmax64(steps[s, b, i]))).sum() for b, i in cells]
    want += 0.8**s * np.mean(ce)
  np.testing.assert_allclose(eagle3_loss(steps, log_pt(target), valid), want, rtol=2e-5)
