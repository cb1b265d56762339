"""Wall-clock timing shared by the benchmark scripts in this folder."""

from __future__ import annotations

from dspark_jax.decoding.profile import median_seconds


def timed(fn, *args, repeats: int) -> float:
  """Median milliseconds of fn(*args) (blocked until ready), after one warm-up call."""
  return median_seconds(lambda: fn(*args), repeats) * 1e3
