"""Static confidence thresholds, replayed on full-proposal rollouts (the paper's Figure 5).

A threshold t verifies, in each round, the leading slots whose confidence is at least t (the
per-slot confidence c_k, or with `cumulative` the product a_k = c_1 ... c_k), and stops at the
first slot below it. Lossless verification decides slot k from the drafts and the target alone,
with random numbers keyed by position, so a round that accepted n drafts with all G verified
accepts min(n, L) of them when only L are verified. Replaying the recorded rounds therefore
gives each threshold's outcome without decoding again (greedy or sampled alike, up to the
rounds' later context, which a shorter verification would change).

Letters: N rounds, G slots, M thresholds.
"""

from __future__ import annotations

import numpy as np

THRESHOLDS = np.round(np.arange(0.0, 0.91, 0.1), 2)


def verified_lengths(confidence_NxG, thresholds_M, cumulative: bool = False) -> np.ndarray:
  """[M, N] slots verified per round: the leading run of slots with score >= threshold."""
  c = np.asarray(confidence_NxG, np.float64)
  score = np.cumprod(c, axis=1) if cumulative else c
  passed = score[None] >= np.asarray(thresholds_M, np.float64)[:, None, None]  # [M, N, G]
  return np.cumprod(passed, axis=2).sum(2)


def threshold_sweep(confidence_NxG, accepted_N, thresholds_M=THRESHOLDS, cumulative=False) -> dict:
  """Per threshold (lists of M): verified, accepted and rejected drafts per round, tokens per
  round (accepted + the bonus token), and the acceptance rate of verified drafts."""
  lengths = verified_lengths(confidence_NxG, thresholds_M, cumulative)
  accepted = np.minimum(lengths, np.asarray(accepted_N)[None])
  verified = lengths.mean(1)
  acc = accepted.mean(1)
  return {
    "thresholds": np.asarray(thresholds_M, np.float64).tolist(),
    "cumulative": cumulative,
    "verified_per_round": verified.tolist(),
    "accepted_per_round": acc.tolist(),
    "rejected_per_round": (verified - acc).tolist(),
    "tokens_per_round": (acc + 1.0).tolist(),
    "acceptance_rate": np.where(verified > 0, acc / np.maximum(verified, 1e-12), np.nan).tolist(),
  }
