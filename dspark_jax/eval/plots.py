"""Figures (matplotlib, the `plots` extra): reliability diagrams of the per-slot confidence."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dspark_jax.eval.calibration import cumulative_confidence, ece, reliability


def reliability_diagram(
  logits_NxG,
  prefix_accepted_NxG,
  temperatures_G,
  path: str | Path,
  offsets_G=None,
  name: str = "STS",
) -> Path:
  """One panel per slot: mean realised prefix acceptance against mean cumulative confidence per
  bin, before (raw) and after calibration (`name`), with each curve's ECE in the legend. Writes
  a PNG."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  y = np.asarray(prefix_accepted_NxG, np.float64)
  g = y.shape[1]
  curves = {
    "raw": cumulative_confidence(logits_NxG),
    name: cumulative_confidence(logits_NxG, temperatures_G, offsets_G),
  }
  cols = min(g, 4)
  rows = -(-g // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False)
  for k, ax in enumerate(axes.flat):
    if k >= g:
      ax.axis("off")
      continue
    ax.plot([0, 1], [0, 1], color="0.7", lw=1)
    for name, a in curves.items():
      _, mean_score, mean_label, count = reliability(a[:, k], y[:, k])
      seen = count > 0
      ax.plot(
        mean_score[seen],
        mean_label[seen],
        marker="o",
        ms=3,
        label=f"{name} (ECE {ece(a[:, k], y[:, k]):.3f})",
      )
    ax.set_title(f"slot {k + 1}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("cumulative confidence")
    ax.set_ylabel("prefix accepted")
    ax.legend(fontsize=7, loc="upper left")
  fig.tight_layout()
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path
