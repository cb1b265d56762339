"""Why STS leaves slot 1's ECE where it does: held-out folds, a sampling-noise floor, and Platt.

    python experiments/calibration_analysis.py --rounds results/calibration_smollm2_dspark/rounds.npz

Reads the raw confidence logits and prefix outcomes that `dspark-jax calibrate` saves and
reports, per slot:
- raw ECE and STS's in-sample ECE (what `calibrate` reports);
- held-out ECE: STS fitted on one half of the rounds, scored on the other, both ways round
  (the halves are the first and second half of the rollout order, so whole prompts mostly stay
  on one side);
- the noise floor: the mean ECE of labels drawn from Bernoulli(score) itself (a perfectly
  calibrated head, same scores and bins), over 200 draws; no calibration can reliably go below it;
- Platt scaling of slot 1 (sigmoid(a z + b), logistic-regression fit) held out the same way:
  STS's temperature is the b = 0 special case, so the gap between the two says how much of the
  miscalibration is an offset that no temperature can remove.
Writes `analysis.json` beside the rounds file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from dspark_jax.eval.calibration import cumulative_confidence, ece, fit_sts


def noise_floor(scores_N, draws: int = 200, seed: int = 0) -> float:
  rng = np.random.default_rng(seed)
  return float(
    np.mean([ece(scores_N, rng.random(scores_N.shape) < scores_N) for _ in range(draws)])
  )


def fit_platt(z_N, y_N, steps: int = 50) -> tuple[float, float]:
  """(a, b) minimising the log loss of sigmoid(a z + b), by Newton's method (float64)."""
  x = np.stack([z_N, np.ones_like(z_N)], 1)
  w = np.array([1.0, 0.0])
  for _ in range(steps):
    p = 1.0 / (1.0 + np.exp(-x @ w))
    grad = x.T @ (p - y_N)
    hess = (x * (p * (1 - p))[:, None]).T @ x + 1e-9 * np.eye(2)
    w = w - np.linalg.solve(hess, grad)
  return float(w[0]), float(w[1])


def held_out(z, y, fit, score) -> float:
  """Mean over the two folds of score(fit on one half, other half), weighted by fold size."""
  half = len(z) // 2
  folds = [(slice(0, half), slice(half, None)), (slice(half, None), slice(0, half))]
  total = 0.0
  for train, test in folds:
    total += score(fit(z[train], y[train]), z[test], y[test]) * len(z[test])
  return total / len(z)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=Path, required=True)
  args = parser.parse_args(argv)
  data = np.load(args.rounds)
  z, y = data["logits"], data["prefix_accepted"]
  g = z.shape[1]
  t_all = fit_sts(z, y)
  raw = cumulative_confidence(z)
  sts = cumulative_confidence(z, t_all)

  def sts_score(k):
    return lambda t, zt, yt: ece(cumulative_confidence(zt, t)[:, k], yt[:, k])

  report = {"rounds": len(z), "sts_temperatures": t_all.tolist(), "slots": []}
  for k in range(g):
    report["slots"].append(
      {
        "slot": k + 1,
        "positives": int(y[:, k].sum()),
        "mean_score_raw": float(raw[:, k].mean()),
        "accepted_rate": float(y[:, k].mean()),
        "ece_raw": ece(raw[:, k], y[:, k]),
        "ece_sts_in_sample": ece(sts[:, k], y[:, k]),
        "ece_sts_held_out": held_out(z, y, fit_sts, sts_score(k)),
        "noise_floor": noise_floor(sts[:, k]),
      }
    )

  def platt_score(ab, zt, yt):
    return ece(1.0 / (1.0 + np.exp(-(ab[0] * zt[:, 0] + ab[1]))), yt[:, 0])

  a, b = fit_platt(z[:, 0], y[:, 0])
  platt = 1.0 / (1.0 + np.exp(-(a * z[:, 0] + b)))
  report["slot1_platt"] = {
    "a": a,
    "b": b,
    "ece_in_sample": ece(platt, y[:, 0]),
    "ece_held_out": held_out(z, y, lambda zt, yt: fit_platt(zt[:, 0], yt[:, 0]), platt_score),
    "noise_floor": noise_floor(platt),
  }
  out = args.rounds.with_name("analysis.json")
  out.write_text(json.dumps(report, indent=2) + "\n")
  print(f"{len(z)} rounds; STS temperatures {np.round(t_all, 3).tolist()}")
  print(
    "| slot | accepted | mean raw score | ECE raw | STS in-sample | STS held-out | noise floor |"
  )
  print("|---|---|---|---|---|---|---|")
  for s in report["slots"]:
    print(
      f"| {s['slot']} | {s['accepted_rate']:.4f} | {s['mean_score_raw']:.4f} | "
      f"{s['ece_raw']:.4f} | {s['ece_sts_in_sample']:.4f} | {s['ece_sts_held_out']:.4f} | "
      f"{s['noise_floor']:.4f} |"
    )
  p = report["slot1_platt"]
  print(
    f"slot 1 Platt sigmoid({a:.3f} z + {b:.3f}): ECE in-sample {p['ece_in_sample']:.4f}, "
    f"held-out {p['ece_held_out']:.4f}, noise floor {p['noise_floor']:.4f}"
  )
  print(f"written to {out}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
