"""Wall-clock timing shared by the benchmark scripts in this folder."""

from __future__ import annotations

import statistics
import time

import jax


def timed(fn, *args, repeats: int) -> float:
  """Median milliseconds of fn(*args) (blocked until ready), after one warm-up call."""
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append((time.perf_counter() - start) * 1e3)
  return statistics.median(times)
