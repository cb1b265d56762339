"""Loss curves of training runs as one figure: loss, CE and slot-1 soft acceptance per step.

    python experiments/plot_training.py --run v3=runs/smollm2_dspark --out results/training_curves.png

Each `--run NAME=FOLDER` reads FOLDER/metrics.jsonl (one line per logged step, one batch each,
so the curves are smoothed with a running mean over `--smooth` logged points). The x axis is the
number of supervised predictions seen (steps x predictions per step, `--predictions NAME=N`;
default: steps), so runs with different batch shapes compare at equal supervision.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def running_mean(x: np.ndarray, k: int) -> np.ndarray:
  if k <= 1 or x.size < k:
    return x
  c = np.cumsum(np.concatenate([[0.0], x]))
  head = c[1:k] / np.arange(1, k)
  return np.concatenate([head, (c[k:] - c[:-k]) / k])


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--run", action="append", required=True, help="NAME=FOLDER")
  ap.add_argument("--predictions", action="append", default=[], help="NAME=predictions per step")
  ap.add_argument("--smooth", type=int, default=5)
  ap.add_argument("--out", default="results/training_curves.png")
  args = ap.parse_args(argv)
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  per_step = {k: float(v) for k, v in (p.split("=", 1) for p in args.predictions)}
  fig, axes = plt.subplots(1, 3, figsize=(15, 4))
  for spec in args.run:
    name, folder = spec.split("=", 1)
    rows = [json.loads(line) for line in (Path(folder) / "metrics.jsonl").read_text().splitlines()]
    x = np.array([r["step"] for r in rows], float) * per_step.get(name, 1.0)
    ce = [r["ce"] if "ce" in r else float(np.mean(r["step_ce"])) for r in rows]
    series = {
      "loss": [r["loss"] for r in rows],
      "CE (nats)": ce,
      "slot-1 soft acceptance": [r["soft_accept"][0] for r in rows],
    }
    for ax, (label, y) in zip(axes, series.items(), strict=True):
      ax.plot(x, running_mean(np.asarray(y, float), args.smooth), label=name)
      ax.set_title(label)
      ax.set_xlabel("supervised predictions" if per_step else "step")
  for ax in axes:
    ax.grid(alpha=0.3)
    ax.legend()
  fig.tight_layout()
  Path(args.out).parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(args.out, dpi=110)
  print(args.out)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
