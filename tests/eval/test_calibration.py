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


def log_loss(scores, labels):
  p = np.clip(scores, 1e-12, 1 - 1e-12)
  return -np.mean(labels * np.log(p) + (1 - labels) * np.log1p(-p))


def test_platt_removes_an_offset_no_temperature_can():
  """Logits shifted by +1 (too confident everywhere): STS keeps sigmoid(0) = 1/2 fixed, so slot 1
  stays off; Platt recovers the shift and reaches the ECE of the true probabilities."""
  true_logits, prefix = rollouts(scale=1.0, seed=2)
  logits = true_logits + 1.0
  temps, offsets = cal.fit_platt(logits, prefix)
  assert offsets[0] == pytest.approx(-1.0, abs=0.1) and temps[0] == pytest.approx(1.0, abs=0.1)
  truth = cal.per_slot_report(true_logits, prefix)["ece"]
  platt = cal.per_slot_report(logits, prefix, temps, offsets)["ece"]
  sts = cal.per_slot_report(logits, prefix, cal.fit_sts(logits, prefix))["ece"]
  assert platt[0] < truth[0] + 0.005 and platt[0] < sts[0] / 2
  # Each slot's fit is no worse in log loss than its starting point (T = 1, b = 0) or STS's
  # temperature with b = 0, the earlier slots' fitted values held.
  sts_t = cal.fit_sts(logits, prefix)
  for k in range(logits.shape[1]):
    t, b = temps.copy(), offsets.copy()
    fitted = log_loss(cal.cumulative_confidence(logits, t, b)[:, k], prefix[:, k])
    for start_t in (1.0, sts_t[k]):
      t[k], b[k] = start_t, 0.0
      other = log_loss(cal.cumulative_confidence(logits, t, b)[:, k], prefix[:, k])
      assert fitted <= other + 1e-9
    scaled = logits[:, k] / temps[k] + offsets[k]
    np.testing.assert_array_equal(
      np.argsort(scaled, kind="stable"), np.argsort(logits[:, k], kind="stable")
    )


def test_platt_stays_finite_on_a_slot_never_accepted():
  logits, prefix = rollouts(n=2000, g=3, seed=3)
  prefix[:, 2] = 0.0
  temps, offsets = cal.fit_platt(logits, prefix)
  assert np.isfinite(offsets).all() and (temps > 0).all()
  assert (temps[2], offsets[2]) == (1.0, 0.0)  # too few outcomes to fit: left alone
  prefix[np.flatnonzero(prefix[:, 1])[: cal.PLATT_MIN_OUTCOMES], 2] = 1.0  # now just enough
  temps, offsets = cal.fit_platt(logits, prefix)
  assert abs(offsets[2]) <= cal.PLATT_OFFSET_BOUND and (temps[2], offsets[2]) != (1.0, 0.0)


def test_split_keeps_whole_batches_on_one_side():
  groups = np.repeat([4, 0, 1, 3], [5, 2, 7, 1])
  fit, held = cal.split_rounds(groups, 0.5)
  assert set(groups[fit]) == {0, 1} and set(groups[held]) == {3, 4}
  assert not (fit & held).any() and (fit | held).all()
  with pytest.raises(ValueError, match="two rollout batches"):
    cal.split_rounds(np.zeros(5), 0.5)


def test_noise_floor_is_the_ece_a_calibrated_head_shows():
  """Labels drawn from the scores themselves: their ECE scatters around the floor."""
  rng = np.random.default_rng(4)
  scores = rng.uniform(0, 1, 3000)
  floor = cal.noise_floor(scores)
  observed = [cal.ece(scores, rng.random(3000) < scores) for _ in range(50)]
  assert 0.7 * floor < np.mean(observed) < 1.3 * floor
  assert cal.noise_floor(scores[:300]) > 2 * floor  # about 1 / sqrt(N)
