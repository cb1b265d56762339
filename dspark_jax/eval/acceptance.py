"""Acceptance metrics of speculative decoding (docs/method.md section 4), from round counts.

Counts are sums over rows (`SpecResult` fields summed over the batch). G proposal slots:
  rounds         rounds run
  counted        tokens counted toward tau (`SpecStats.counted`): accepted drafts plus the bonus
                 token, except that a round reaching EOS counts only its accepted drafts
  committed      tokens the rounds committed (cut at EOS and at the token budget)
  admitted [G]   rounds in which slot k was verified
  accepted [G]   rounds in which slots 1..k were all accepted (non-increasing over k)
  reached [G]    rounds in which slot k was verified with slots 1..k-1 all accepted

tau = counted / rounds: the paper's accepted length. Prefix survival at k = accepted[k] / rounds.
Conditional acceptance at k = accepted[k] / reached[k]: the paper's position-wise acceptance,
accepted at k given all before k (and k verified; with full proposals reached[k] is
accepted[k - 1], or the rounds for slot 1).
Verify rate = committed / verified slots. `reached` is returned too: it is the sample size of
each slot's conditional acceptance, which is undefined (None) where no round reached the slot.
"""

from __future__ import annotations

import numpy as np


def acceptance_metrics(rounds, counted, committed, admitted_G, accepted_G, reached_G) -> dict:
  """The metrics above as floats (per-slot ones as lists of G), the round count and `reached`
  per slot. Per-slot counts may be given per row ([B, G]); they are summed."""
  rounds = float(np.sum(rounds))
  admitted, accepted, reached = (
    np.asarray(x, np.float64).reshape(-1, np.shape(x)[-1]).sum(0)
    for x in (admitted_G, accepted_G, reached_G)
  )
  if np.any(np.diff(accepted) > 0) or np.any(accepted > reached) or np.any(reached > admitted):
    raise ValueError("need accepted <= reached <= admitted, accepted non-increasing over slots")
  per_round = max(rounds, 1.0)
  return {
    "tau": float(np.sum(counted)) / per_round,
    "committed_per_round": float(np.sum(committed)) / per_round,
    "verify_rate": float(np.sum(committed)) / max(admitted.sum(), 1.0),
    "rounds": int(rounds),
    "prefix_survival": (accepted / per_round).tolist(),
    # A slot no round reached has no conditional acceptance (None, JSON null), not 0.
    "conditional_acceptance": [
      a / r if r else None for a, r in zip(accepted, reached, strict=True)
    ],
    "reached": reached.astype(int).tolist(),
  }


def metrics_of(result) -> dict:
  """`acceptance_metrics` of a `SpecResult`."""
  return acceptance_metrics(
    result.rounds,
    result.counted,
    result.committed,
    result.admitted,
    result.accepted,
    result.reached,
  )
