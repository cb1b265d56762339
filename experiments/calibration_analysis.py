"""Why STS leaves slot 1's ECE where it does: held-out folds, a sampling-noise floor, and Platt.

    python experiments/calibration_analysis.py --rounds results/calibration_smollm2_dspark_v3/rounds.npz

Reads the raw confidence logits and prefix outcomes that `dspark-jax calibrate` saves and
reports, per slot:
- raw ECE, and the in-sample ECE of STS and of sequential Platt scaling (`fit_platt`: a
  temperature and an offset per slot, by log loss);
- held-out ECE of each: fitted on one half of the rounds, scored on the other, both ways round
  (the halves are the first and second half of the rollout order, so whole prompts mostly stay
  on one side);
- the noise floor: the mean ECE of labels drawn from Bernoulli(score) itself (a perfectly
  calibrated head, same scores and bins), over 200 draws; no calibration can reliably go below it.
STS's temperature is Platt's b = 0 special case, so the gap between the two says how much of the
miscalibration is an offset that no temperature can remove. Writes `analysis.json` beside the
rounds file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from dspark_jax.eval.calibration import cumulative_confidence, ece, fit_platt, fit_sts, noise_floor


def held_out(z, y, fit, k) -> float:
  """Slot k's ECE of `fit` (rounds -> (temperatures, offsets)) on the other half, averaged over
  the two folds weighted by fold size."""
  half = len(z) // 2
  folds = [(slice(0, half), slice(half, None)), (slice(half, None), slice(0, half))]
  total = 0.0
  for train, test in folds:
    t, b = fit(z[train], y[train])
    total += ece(cumulative_confidence(z[test], t, b)[:, k], y[test, k]) * len(z[test])
  return total / len(z)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=Path, required=True)
  args = parser.parse_args(argv)
  data = np.load(args.rounds)
  z, y = data["logits"], data["prefix_accepted"]
  g = z.shape[1]
  fits = {"sts": lambda zt, yt: (fit_sts(zt, yt), None), "platt": fit_platt}
  params = {name: fit(z, y) for name, fit in fits.items()}
  scores = {name: cumulative_confidence(z, *p) for name, p in params.items()}
  raw = cumulative_confidence(z)
  report = {
    "rounds": len(z),
    "sts_temperatures": params["sts"][0].tolist(),
    "platt_temperatures": params["platt"][0].tolist(),
    "platt_offsets": params["platt"][1].tolist(),
    "slots": [],
  }
  for k in range(g):
    row = {
      "slot": k + 1,
      "positives": int(y[:, k].sum()),
      "mean_score_raw": float(raw[:, k].mean()),
      "accepted_rate": float(y[:, k].mean()),
      "ece_raw": ece(raw[:, k], y[:, k]),
      "noise_floor": noise_floor(scores["platt"][:, k]),
    }
    for name, fit in fits.items():
      row[f"ece_{name}_in_sample"] = ece(scores[name][:, k], y[:, k])
      row[f"ece_{name}_held_out"] = held_out(z, y, fit, k)
    report["slots"].append(row)
  out = args.rounds.with_name("analysis.json")
  out.write_text(json.dumps(report, indent=2) + "\n")
  print(f"{len(z)} rounds; STS temperatures {np.round(params['sts'][0], 3).tolist()}")
  print(
    f"Platt temperatures {np.round(params['platt'][0], 3).tolist()}, "
    f"offsets {np.round(params['platt'][1], 3).tolist()}"
  )
  print(
    "| slot | accepted | mean raw score | ECE raw | STS in-sample | STS held-out | "
    "Platt in-sample | Platt held-out | noise floor |"
  )
  print("|---|---|---|---|---|---|---|---|---|")
  for s in report["slots"]:
    print(
      f"| {s['slot']} | {s['accepted_rate']:.4f} | {s['mean_score_raw']:.4f} | "
      f"{s['ece_raw']:.4f} | {s['ece_sts_in_sample']:.4f} | {s['ece_sts_held_out']:.4f} | "
      f"{s['ece_platt_in_sample']:.4f} | {s['ece_platt_held_out']:.4f} | "
      f"{s['noise_floor']:.4f} |"
    )
  print(f"written to {out}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
