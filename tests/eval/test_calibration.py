"""Calibration metrics against brute-force float64 references, and STS's guarantees."""

import itertools

import numpy as np
import pytest

from dspark_jax.eval import calibration as cal


def brute_ece(scores, labels, bins=20):
  total = 0.0
  for b in range(bins):
    lo, hi = b / bins, (b + 1) / bins
    inside = [
      (s, y)
      for s, y in zip(scores, labels, strict=True)
      if lo <= s < hi or (b == bins - 1 and s == 1)
    ]
    if inside:
      gap = np.mean([s for s, _ in inside]) - np.mean([y for _, y in inside])
      total += len(inside) / len(scores) * abs(gap)
  return total


def brute_auc(scores, labels):
  pairs = [
    1.0 if p > n else 0.5 if p == n else 0.0
    for p, n in itertools.product(scores[labels == 1], scores[labels == 0])
  ]
  return float(np.mean(pairs))


@pytest.mark.parametrize("seed", range(4))
def test_metrics_equal_brute_force_references(seed):
  rng = np.random.default_rng(seed)
  n = 300
  # Rounded scores make ties (AUC's average ranks) and bin edges (0.05 steps) likely.
  scores = np.round(rng.uniform(0, 1, n), 2 if seed % 2 else 1)
  scores[:3] = [0.0, 1.0, 0.05]
  labels = (rng.uniform(0, 1, n) < scores**0.7).astype(float)
  np.testing.assert_allclose(cal.ece(scores, labels), brute_ece(scores, labels), rtol=1e-12)
  np.testing.assert_allclose(cal.roc_auc(scores, labels), brute_auc(scores, labels), rtol=1e-12)
  want_brier = sum((s - y) ** 2 for s, y in zip(scores, labels, strict=True)) / n
  np.testing.assert_allclose(cal.brier(scores, labels), want_brier, rtol=1e-12)


def test_hand_computed_values():
  scores = np.array([0.9, 0.8, 0.3, 0.3])
  labels = np.array([1.0, 0.0, 1.0, 0.0])
  # Bins: {0.9}, {0.8}, {0.3, 0.3}: gaps 0.1, 0.8, 0.3 - 0.5 = -0.2 with shares 1/4, 1/4, 1/2.
  assert cal.ece(scores, labels) == pytest.approx(0.25 * 0.1 + 0.25 * 0.8 + 0.5 * 0.2)
  # Positive pairs: (0.9 > 0.8) 1, (0.9 > 0.3) 1, (0.3 < 0.8) 0, (0.3 = 0.3) 1/2.
  assert cal.roc_auc(scores, labels) == pytest.approx(2.5 / 4)
  assert cal.brier(scores, labels) == pytest.approx((0.01 + 0.64 + 0.49 + 0.09) / 4)
  assert np.isnan(cal.roc_auc(scores, np.ones(4)))
  with pytest.raises(ValueError, match="probabilities"):
    cal.ece([1.5], [1])


def rollouts(n=20000, g=5, scale=3.0, seed=0):
  """Overconfident logits (true logit times `scale`) and prefix acceptance drawn from the truth."""
  rng = np.random.default_rng(seed)
  true_logits = rng.normal(1.0, 1.5, (n, g))
  accepted = rng.uniform(size=(n, g)) < 1 / (1 + np.exp(-true_logits))
  prefix = np.cumprod(accepted, axis=1).astype(float)
  return true_logits * scale, prefix


def test_sts_lowers_ece_and_keeps_each_slots_order():
  logits, prefix = rollouts()
  temps = cal.fit_sts(logits, prefix)
  before = cal.per_slot_report(logits, prefix)
  after = cal.per_slot_report(logits, prefix, temps)
  assert all(a <= b + 1e-15 for a, b in zip(after["ece"], before["ece"], strict=True))
  assert after["ece"][0] < 0.02 < before["ece"][0]
  assert temps[0] == pytest.approx(3.0, rel=0.1)  # it undoes the overconfidence
  scaled = logits / temps
  for k in range(logits.shape[1]):
    np.testing.assert_array_equal(
      np.argsort(scaled[:, k], kind="stable"), np.argsort(logits[:, k], kind="stable")
    )


def test_sts_never_raises_the_ece_it_fits_even_when_calibrated():
  logits, prefix = rollouts(scale=1.0, seed=1)
  temps = cal.fit_sts(logits, prefix)
  before = cal.per_slot_report(logits, prefix)["ece"]
  after = cal.per_slot_report(logits, prefix, temps)["ece"]
  assert after[0] <= before[0] + 1e-15
  # Each step: slot k's fitted ECE against T_k = 1 with the earlier slots' fitted temperatures.
  for k in range(1, logits.shape[1]):
    unscaled_k = temps.copy()
    unscaled_k[k:] = 1.0
    assert after[k] <= cal.per_slot_report(logits, prefix, unscaled_k)["ece"][k] + 1e-15
