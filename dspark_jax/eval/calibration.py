"""Calibration of the confidence head: ECE, ROC-AUC, Brier, and Sequential Temperature Scaling.

Inputs come from held-out rollouts with full-length verification: per round and slot k, the
confidence logit z_k and the realised prefix acceptance y_k (1 iff slots 1..k were all
accepted). The score judged is the cumulative product a_k = prod_{j<=k} sigmoid(z_j / T_j), the
drafter's estimate of P(y_k = 1), which is what the scheduler ranks.

STS (docs/method.md section 5): for k = 1..G in order, one temperature T_k for slot k's
logit, chosen on a grid to minimise the ECE of a_k against y_k with the earlier slots'
temperatures fixed. The grid holds T = 1, so each step never raises the ECE it optimises: slot
k's fitted ECE is at most its ECE with T_k = 1 and the earlier slots' fitted temperatures. Slot 1
therefore never ends above its raw ECE. A later slot can, because a_k also moves with the earlier
slots' temperatures: on the SmolLM2 DSpark drafter's rollouts, slot 2 went from 0.0055 to
0.0063. Dividing a logit by T > 0 keeps the order of a slot's confidences.

Letters: N rounds, G slots. Plain NumPy (float64): these run once on a few thousand rounds.
"""

from __future__ import annotations

import numpy as np

NUM_BINS = 20
# Log-spaced temperatures from 1/20 to 20, and T = 1 exactly.
TEMPERATURE_GRID = np.unique(np.concatenate([np.geomspace(0.05, 20.0, 241), [1.0]]))


def _check(scores_N, labels_N):
  scores = np.asarray(scores_N, np.float64)
  labels = np.asarray(labels_N, np.float64)
  if scores.shape != labels.shape or scores.ndim != 1:
    raise ValueError(f"scores {scores.shape} and labels {labels.shape} must be equal 1-D shapes")
  if scores.size and (scores.min() < 0 or scores.max() > 1):
    raise ValueError("scores must be probabilities in [0, 1]")
  if not np.isin(labels, (0.0, 1.0)).all():
    raise ValueError("labels must be 0 or 1")
  return scores, labels


def ece(scores_N, labels_N, num_bins: int = NUM_BINS) -> float:
  """Expected calibration error over equal-width bins of [0, 1] (the last bin holds 1.0):
  sum over bins of (bin share) * |mean score - mean label|."""
  scores, labels = _check(scores_N, labels_N)
  if not scores.size:
    return 0.0
  bins = np.minimum((scores * num_bins).astype(np.int64), num_bins - 1)
  gap = np.bincount(bins, scores - labels, minlength=num_bins)  # per-bin sum of differences
  return float(np.abs(gap).sum() / scores.size)


def brier(scores_N, labels_N) -> float:
  scores, labels = _check(scores_N, labels_N)
  return float(np.mean((scores - labels) ** 2)) if scores.size else 0.0


def roc_auc(scores_N, labels_N) -> float:
  """P(score of a positive > score of a negative), ties counting one half (Mann-Whitney U with
  average ranks); NaN when either class is absent."""
  scores, labels = _check(scores_N, labels_N)
  pos = int(labels.sum())
  neg = labels.size - pos
  if pos == 0 or neg == 0:
    return float("nan")
  order = np.argsort(scores, kind="mergesort")
  ranks = np.empty(scores.size)
  sorted_scores = scores[order]
  # Average rank (1-based) over each run of tied scores.
  starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
  ends = np.r_[starts[1:], scores.size]
  for s, e in zip(starts, ends, strict=True):
    ranks[order[s:e]] = (s + e + 1) / 2.0
  u = ranks[labels == 1].sum() - pos * (pos + 1) / 2.0
  return float(u / (pos * neg))


def cumulative_confidence(logits_NxG, temperatures_G=None, offsets_G=None) -> np.ndarray:
  """[N, G] a_k = prod_{j<=k} sigmoid(z_j / T_j + b_j) (T = 1, b = 0 where not given)."""
  z = np.asarray(logits_NxG, np.float64)
  t = np.ones(z.shape[1]) if temperatures_G is None else np.asarray(temperatures_G, np.float64)
  b = np.zeros(z.shape[1]) if offsets_G is None else np.asarray(offsets_G, np.float64)
  if t.shape != (z.shape[1],) or (t <= 0).any():
    raise ValueError(f"need {z.shape[1]} positive temperatures, got {t}")
  if b.shape != (z.shape[1],) or not np.isfinite(b).all():
    raise ValueError(f"need {z.shape[1]} finite offsets, got {b}")
  return np.cumprod(_sigmoid(z / t + b), axis=1)


def _sigmoid(x):
  return 0.5 * (1.0 + np.tanh(0.5 * x))  # no overflow warnings for large |x|


def fit_sts(logits_NxG, prefix_accepted_NxG, grid=TEMPERATURE_GRID) -> np.ndarray:
  """[G] temperatures by Sequential Temperature Scaling (left to right, earlier ones fixed)."""
  z = np.asarray(logits_NxG, np.float64)
  y = np.asarray(prefix_accepted_NxG, np.float64)
  if z.shape != y.shape or z.ndim != 2:
    raise ValueError(f"logits {z.shape} and labels {y.shape} must be equal [N, G] shapes")
  temperatures = np.ones(z.shape[1])
  before = np.ones(z.shape[0])  # a_{k-1} under the temperatures fitted so far
  for k in range(z.shape[1]):
    errors = [ece(before / (1.0 + np.exp(-z[:, k] / t)), y[:, k]) for t in grid]
    best = min(range(len(grid)), key=lambda i: (errors[i], abs(np.log(grid[i]))))
    temperatures[k] = grid[best]
    before = before / (1.0 + np.exp(-z[:, k] / temperatures[k]))
  return temperatures


# Bounds of the Platt fit: the STS grid's temperature range, and offsets that a logit of a
# never-accepted slot cannot push to infinity.
PLATT_LOG_T_BOUND = float(np.log(20.0))
PLATT_OFFSET_BOUND = 20.0
# A slot with fewer accepted (or rejected) rounds than this keeps T = 1, b = 0: two free
# parameters on a handful of positives only memorise them (SmolLM2's slot 6 had 3 of 4,767 and
# the fit ran to the bounds).
PLATT_MIN_OUTCOMES = 30


def fit_platt(logits_NxG, prefix_accepted_NxG) -> tuple[np.ndarray, np.ndarray]:
  """([G] temperatures, [G] offsets) by sequential Platt scaling (left to right, earlier slots
  fixed): slot k minimises the mean log loss of a_{k-1} * sigmoid(z_k / T_k + b_k) against y_k.
  Slots with fewer than `PLATT_MIN_OUTCOMES` of either outcome are left at T = 1, b = 0."""
  from scipy.optimize import minimize

  z = np.asarray(logits_NxG, np.float64)
  y = np.asarray(prefix_accepted_NxG, np.float64)
  if z.shape != y.shape or z.ndim != 2:
    raise ValueError(f"logits {z.shape} and labels {y.shape} must be equal [N, G] shapes")
  g = z.shape[1]
  temperatures, offsets = np.ones(g), np.zeros(g)
  before = np.ones(z.shape[0])
  eps = 1e-12
  for k in range(g):
    zk, yk = z[:, k], y[:, k]
    if min(yk.sum(), len(yk) - yk.sum()) < PLATT_MIN_OUTCOMES:
      before = before * _sigmoid(zk)
      continue

    def loss_and_grad(p, zk=zk, yk=yk, before=before):
      s = _sigmoid(zk * np.exp(-p[0]) + p[1])
      a = np.clip(before * s, eps, 1 - eps)
      loss = -np.mean(yk * np.log(a) + (1 - yk) * np.log1p(-a))
      # d loss / d u with u = z e^{-log T} + b, a = before * sigmoid(u).
      du = (-yk / a + (1 - yk) / (1 - a)) * a * (1 - s)
      return loss, np.array([np.mean(du * -zk * np.exp(-p[0])), np.mean(du)])

    bounds = [(-PLATT_LOG_T_BOUND, PLATT_LOG_T_BOUND), (-PLATT_OFFSET_BOUND, PLATT_OFFSET_BOUND)]
    fit = minimize(loss_and_grad, np.zeros(2), jac=True, method="L-BFGS-B", bounds=bounds)
    temperatures[k], offsets[k] = np.exp(fit.x[0]), fit.x[1]
    before = before * _sigmoid(zk / temperatures[k] + offsets[k])
  return temperatures, offsets


def split_rounds(groups_N, fit_fraction: float = 0.5):
  """(fit mask, held-out mask) [N] bool: whole groups (rollout batches, so whole prompts) go to
  one side, the first `fit_fraction` of the groups in order to the fit."""
  groups = np.asarray(groups_N)
  if not 0 < fit_fraction < 1:
    raise ValueError(f"fit_fraction must be in (0, 1), got {fit_fraction}")
  order = np.unique(groups)
  if len(order) < 2:
    raise ValueError("need rounds from at least two rollout batches to hold some out")
  cut = min(max(int(round(fit_fraction * len(order))), 1), len(order) - 1)
  fit = np.isin(groups, order[:cut])
  return fit, ~fit


def noise_floor(scores_N, draws: int = 200, seed: int = 0) -> float:
  """Mean ECE of labels drawn from Bernoulli(score) itself: what a perfectly calibrated head
  with these scores and this sample size would show; no fit reliably goes below it."""
  scores = np.asarray(scores_N, np.float64)
  rng = np.random.default_rng(seed)
  return float(np.mean([ece(scores, rng.random(scores.shape) < scores) for _ in range(draws)]))


def per_slot_report(logits_NxG, prefix_accepted_NxG, temperatures_G=None, offsets_G=None) -> dict:
  """ECE, ROC-AUC and Brier of a_k per slot, as lists of length G."""
  a = cumulative_confidence(logits_NxG, temperatures_G, offsets_G)
  y = np.asarray(prefix_accepted_NxG, np.float64)
  cols = range(a.shape[1])
  return {
    "ece": [ece(a[:, k], y[:, k]) for k in cols],
    "auc": [roc_auc(a[:, k], y[:, k]) for k in cols],
    "brier": [brier(a[:, k], y[:, k]) for k in cols],
  }


def reliability(scores_N, labels_N, num_bins: int = NUM_BINS):
  """(bin centres, mean score, mean label, count) over equal-width bins, for diagrams; empty
  bins give NaN means."""
  scores, labels = _check(scores_N, labels_N)
  bins = np.minimum((scores * num_bins).astype(np.int64), num_bins - 1)
  count = np.bincount(bins, minlength=num_bins)
  with np.errstate(invalid="ignore", divide="ignore"):
    mean_score = np.bincount(bins, scores, minlength=num_bins) / count
    mean_label = np.bincount(bins, labels, minlength=num_bins) / count
  centres = (np.arange(num_bins) + 0.5) / num_bins
  return centres, mean_score, mean_label, count


def full_rounds(trace, draft_len: int):
  """(confidence [N, G], accepted [N]) of the rounds a `RoundTrace` (NumPy, from
  `speculative_generate(trace=True)`) verified at full length; shorter verifications would
  leave later slots unobserved."""
  full = np.asarray(trace.verified) == draft_len
  return np.asarray(trace.confidence)[full], np.asarray(trace.accepted)[full]


def logits_and_labels(confidence_NxG, accepted_N):
  """(confidence logits [N, G], prefix acceptance [N, G]) of full-length rounds: y_k = 1 iff the
  round accepted at least k drafts."""
  conf = np.asarray(confidence_NxG, np.float64)
  if np.isnan(conf).any():
    raise ValueError("the drafter reported no confidence (only DSpark's confidence head does)")
  p = np.clip(conf, 1e-7, 1 - 1e-7)
  labels = np.arange(conf.shape[1])[None] < np.asarray(accepted_N)[:, None]
  return np.log(p) - np.log1p(-p), labels.astype(float)


def rounds_from_trace(trace, draft_len: int):
  """`logits_and_labels` of a trace's full-length rounds."""
  return logits_and_labels(*full_rounds(trace, draft_len))
