"""Temperature / top-k / top-p sampling with counter-based randomness.

Every draw is keyed by (seed, request id, position of the token being drawn), so a request's
sampled text does not depend on its batch mates, the batch size or the number of devices.
`filter_logits` is the one definition of the (modified) target distribution; verification
applies the same function to target and draft logits so speculative decoding stays lossless.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct


@dataclasses.dataclass(frozen=True)
class SamplingParams:
  """How tokens are drawn; temperature 0 means greedy (argmax)."""

  temperature: float = 0.0
  top_k: int = 0  # 0 keeps the whole vocabulary
  top_p: float = 1.0

  def __post_init__(self):
    # inf would flatten every distribution to uniform noise, NaN poisons every comparison.
    if not 0.0 <= self.temperature < math.inf:  # also rejects NaN
      raise ValueError(f"temperature must be >= 0 and finite (0 = greedy), got {self.temperature}")
    if not 0.0 < self.top_p <= 1.0:
      raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
    if self.top_k < 0:
      raise ValueError(f"top_k must be >= 0 (0 = no top-k filter), got {self.top_k}")

  @property
  def greedy(self) -> bool:
    return self.temperature == 0.0


@struct.dataclass
class RowSampling:
  """Sampling parameters per row, as arrays (the serving engine's slots each hold a request with
  its own). A row with temperature 0 is greedy: its filtered distribution is one-hot at the
  argmax (the first maximum, as `argmax` picks), so drawing from it, and verifying against it,
  gives exactly plain greedy decoding's tokens."""

  temperature: jax.Array  # [B] float32, 0 = greedy
  top_k: jax.Array  # [B] int32, 0 = no top-k filter
  top_p: jax.Array  # [B] float32 in (0, 1]

  # Static: rows always take the sampling path (greedy rows through their one-hot distribution).
  greedy = False

  @classmethod
  def of(cls, params: list[SamplingParams]) -> RowSampling:
    """Stacks validated per-request parameters into row arrays."""
    return cls(
      np.asarray([p.temperature for p in params], np.float32),
      np.asarray([p.top_k for p in params], np.int32),
      np.asarray([p.top_p for p in params], np.float32),
    )


def filter_logits(logits_BxV: jax.Array, params: SamplingParams | RowSampling) -> jax.Array:
  """Log-weights of the sampling distribution: logits / T with tokens outside top-k/top-p at -inf.

  The order is temperature, then top-k, then top-p on the renormalised top-k distribution (as
  in HF transformers). Ties at a cut-off are all kept. `logits` is [B, ..., V]; with
  `RowSampling`, row b uses the parameters at index b.
  """
  if isinstance(params, RowSampling):
    return _filter_rows(logits_BxV, params)
  logits = logits_BxV.astype(jnp.float32)
  scaled = logits / params.temperature
  top_k = params.top_k if 0 < params.top_k < scaled.shape[-1] else 0
  if not top_k and params.top_p >= 1.0:
    return scaled
  if top_k:
    # A partial top-k instead of a full vocabulary sort (the renormalised top-k distribution
    # only needs these values). It runs on the unscaled logits and is scaled after (x / T is
    # monotonic and elementwise, so the values are the same): XLA:CPU made a top-k over
    # `scaled` as slow as the sort when `scaled` also fed the final `where`
    # (experiments/bench_sampling_filter.py).
    sorted_desc = jax.lax.top_k(logits, top_k)[0] / params.temperature
    threshold = sorted_desc[..., top_k - 1]
  else:
    sorted_desc = -jnp.sort(-scaled, axis=-1)
    threshold = jnp.full(scaled.shape[:-1], -jnp.inf)
  if params.top_p < 1.0:
    probs = jax.nn.softmax(sorted_desc, axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    # Keep the smallest prefix whose mass reaches top_p (the first token is always kept).
    kept = jnp.sum(mass_before < params.top_p, axis=-1)
    threshold = jnp.maximum(
      threshold, jnp.take_along_axis(sorted_desc, kept[..., None] - 1, axis=-1)[..., 0]
    )
  return jnp.where(scaled >= threshold[..., None], scaled, -jnp.inf)


def _filter_rows(logits_BxV: jax.Array, rows: RowSampling) -> jax.Array:
  """`filter_logits` with per-row parameters. The same cut-offs as the static path (the top-k
  threshold is the k-th largest value, top-p keeps the smallest prefix of the renormalised
  top-k distribution reaching p); the sort runs only when some row filters."""
  logits = logits_BxV.astype(jnp.float32)
  v = logits.shape[-1]
  per_row = lambda x: jnp.reshape(x, x.shape + (1,) * (logits.ndim - x.ndim))  # [B, 1.., 1]
  temperature = jnp.asarray(rows.temperature, jnp.float32)
  greedy = per_row(temperature == 0)
  scaled = logits / per_row(jnp.where(temperature > 0, temperature, 1.0))
  top_k = jnp.asarray(rows.top_k, jnp.int32)
  top_k = per_row(jnp.where((top_k > 0) & (top_k < v), top_k, v))
  top_p = per_row(jnp.asarray(rows.top_p, jnp.float32))

  def cut(scaled):
    sorted_desc = -jnp.sort(-scaled, axis=-1)
    kth = jnp.take_along_axis(sorted_desc, top_k - 1, axis=-1)
    ranks = jnp.arange(v)
    in_top_k = ranks < top_k
    probs = jax.nn.softmax(jnp.where(in_top_k, sorted_desc, -jnp.inf), axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    kept = jnp.sum(in_top_k & (mass_before < top_p), axis=-1, keepdims=True)
    pth = jnp.take_along_axis(sorted_desc, jnp.maximum(kept, 1) - 1, axis=-1)
    threshold = jnp.maximum(
      jnp.where(top_k < v, kth, -jnp.inf), jnp.where(top_p < 1.0, pth, -jnp.inf)
    )
    return jnp.where(scaled >= threshold, scaled, -jnp.inf)

  filters = jnp.any((top_k < v) | (top_p < 1.0))
  scaled = jax.lax.cond(filters, cut, lambda x: x, scaled)
  best = jnp.argmax(logits, axis=-1)[..., None]
  one_hot = jnp.where(jnp.arange(v) == best, 0.0, -jnp.inf)
  return jnp.where(greedy, one_hot, scaled)


def token_keys(seed: jax.Array | int, request_ids_B: jax.Array, positions_B: jax.Array):
  """One PRNG key per row, a pure function of (seed, request id, position).

  `seed` is one seed for the batch ([]) or one per row ([B], the serving engine's slots); a row
  gets the same key either way."""
  seed = jnp.asarray(seed)
  if seed.ndim == 0:
    base = jax.random.key(seed)
    return jax.vmap(lambda r, p: jax.random.fold_in(jax.random.fold_in(base, r), p))(
      request_ids_B, positions_B
    )
  return jax.vmap(lambda s, r, p: jax.random.fold_in(jax.random.fold_in(jax.random.key(s), r), p))(
    seed, request_ids_B, positions_B
  )


def sample(
  logits_BxV: jax.Array, params: SamplingParams | RowSampling, keys_B: jax.Array
) -> jax.Array:
  """Draws one token per row: argmax if greedy, else from `filter_logits`. Returns [B] int32."""
  if params.greedy:
    return jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)
  weights = filter_logits(logits_BxV, params)
  return jax.vmap(jax.random.categorical)(keys_B, weights).astype(jnp.int32)
