"""Decode slots: inserting one prefilled request into slot i of a batched decode state.

Every leaf of a `SpecState` either has a batch axis (tokens, caches, drafter state, per-row
sampling, the scheduler's history, whose batch axis is 1) or is a batch-wide value (the
scheduler's scalars). Which axis is the batch is read off the shapes: the one where the
B-slot state has B and the one-request state has 1, every other dimension equal. A batch-wide
leaf keeps the engine's value. A leaf that fits neither is an error, never a guess.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def batch_axis(big_shape: tuple[int, ...], small_shape: tuple[int, ...], slots: int) -> int | None:
  """The batch axis of a leaf ([..., B, ...] against [..., 1, ...]), or None for a batch-wide
  leaf (equal shapes). Raises ValueError when the shapes fit neither."""
  if big_shape == small_shape:
    return None
  if len(big_shape) == len(small_shape):
    axes = [
      a
      for a in range(len(big_shape))
      if big_shape[a] == slots
      and small_shape[a] == 1
      and all(big_shape[b] == small_shape[b] for b in range(len(big_shape)) if b != a)
    ]
    if len(axes) == 1:
      return axes[0]
  raise ValueError(
    f"cannot insert a leaf of shape {small_shape} into one of shape {big_shape} ({slots} slots): "
    "no single batch axis"
  )


def insert(big, small, slot: jax.Array):
  """`big` (B slots) with slot `slot` replaced by `small` (one request), leaf by leaf.

  With one slot every leaf is the request's (the batch-wide values included)."""
  slots = _slot_count(big, small)
  if slots == 1:
    return jax.tree.map(lambda b, s: s.astype(b.dtype), big, small)

  def put(b, s):
    axis = batch_axis(b.shape, s.shape, slots)
    if axis is None:
      return b
    start = [0] * b.ndim
    start[axis] = slot
    return jax.lax.dynamic_update_slice(b, s.astype(b.dtype), [jnp.int32(i) for i in start])

  return jax.tree.map(put, big, small)


def _slot_count(big, small) -> int:
  """B, from the first leaf whose shapes differ (1 if none does)."""
  for b, s in zip(jax.tree.leaves(big), jax.tree.leaves(small), strict=True):
    if b.shape != s.shape:
      return next(bd for bd, sd in zip(b.shape, s.shape, strict=True) if bd != sd)
  return 1


insert_jit = jax.jit(insert, donate_argnums=(0,))
