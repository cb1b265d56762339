"""Feature preconditioning: train W_c on per-dimension rescaled target features, export it folded.

A target's layer outputs carry a few "massive activation" dimensions. In SmolLM2-135M, dimension
17 of layer 28 averages |x| ~ 550 against a median of ~11, and dimension 507 of layer 22 averages
~ 260 against ~ 5.5 (measured on the training cache). Under Adam every weight moves by about the
learning rate per step, whatever its input's scale. So the rows of W_c that read those dimensions
swing the context 50 times faster than the rest, and the informative dimensions learn slowly.

With preconditioning, the trainer feeds x / s to W_c, where s is the per-dimension RMS of the
features over the first samples, and trains W~. Since (x / s) @ W~ = x @ (W~ / s[:, None]), the
drafter it exports, with W_c = W~ / s[:, None], has DeepSpec's architecture and computes the
same function. Only the optimisation changes: each feature dimension starts on an equal footing.
DeepSpec does not do this; it is off by default and on in the CPU-sized SmolLM2 configs, whose
short budgets feel the slow start most (TRAINING.md has the measurement).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

FILE = "feature_scale.npy"
NUM_SAMPLES = 16  # samples the RMS is taken over: thousands of tokens, a fraction of a second


def feature_rms(features: Sequence[np.ndarray]) -> np.ndarray:
  """Per-dimension RMS [F] (float32) over the tokens of a list of [T_i, F] arrays.

  A dimension that is zero everywhere gets scale 1, so the rescaling never divides by zero.
  """
  total = np.zeros(features[0].shape[-1], np.float64)
  count = 0
  for f in features:
    f = np.asarray(f, np.float64)
    total += np.square(f).sum(0)
    count += f.shape[0]
  rms = np.sqrt(total / max(count, 1))
  return np.where(rms > 0, rms, 1.0).astype(np.float32)


def load_or_measure(out_dir: str | Path, measure) -> np.ndarray:
  """The run's scale [F]: read from out_dir if an earlier call wrote it, else `measure()` and
  write it, so a resumed run divides by exactly the numbers its checkpoints were trained with."""
  path = Path(out_dir) / FILE
  if path.is_file():
    return np.load(path)
  scale = np.asarray(measure(), np.float32)
  tmp = path.with_suffix(".tmp.npy")
  np.save(tmp, scale)
  tmp.replace(path)
  return scale


def fold_into_fc(trainable: dict, scale_F) -> dict:
  """Trainable params for raw features: W_c [F, D] becomes W~ / scale[:, None]."""
  fc = trainable["fc"]
  return {**trainable, "fc": (fc / np.asarray(scale_F)[:, None].astype(fc.dtype)).astype(fc.dtype)}
