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


def filter_logits(logits_BxV: jax.Array, params: SamplingParams) -> jax.Array:
  """Log-weights of the sampling distribution: logits / T with tokens outside top-k/top-p at -inf.

  The order is temperature, then top-k, then top-p on the renormalised top-k distribution (as
  in HF transformers). Ties at a cut-off are all kept.
  """
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


def token_keys(seed: jax.Array | int, request_ids_B: jax.Array, positions_B: jax.Array):
  """One PRNG key per row, a pure function of (seed, request id, position)."""
  base = jax.random.key(seed)
  return jax.vmap(lambda r, p: jax.random.fold_in(jax.random.fold_in(base, r), p))(
    request_ids_B, positions_B
  )


def sample(logits_BxV: jax.Array, params: SamplingParams, keys_B: jax.Array) -> jax.Array:
  """Draws one token per row: argmax if greedy, else from `filter_logits`. Returns [B] int32."""
  if params.greedy:
    return jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)
  weights = filter_logits(logits_BxV, params)
  return jax.vmap(jax.random.categorical)(keys_B, weights).astype(jnp.int32)
