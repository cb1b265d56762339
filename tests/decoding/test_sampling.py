"""Sampling: the filtered distribution against a float64 NumPy reference, and draws against it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dspark_jax.decoding.sampling import (
  RowSampling,
  SamplingParams,
  filter_logits,
  sample,
  token_keys,
)


def reference_probs(logits: np.ndarray, temperature: float, top_k: int, top_p: float):
  """Float64, one row at a time, written as plainly as possible."""
  z = logits.astype(np.float64) / temperature
  order = np.argsort(-z, kind="stable")
  keep = np.ones_like(z, dtype=bool)
  if 0 < top_k < len(z):
    keep[:] = False
    keep[order[:top_k]] = True
    keep |= z >= z[order[top_k - 1]]  # ties at the cut are kept
  if top_p < 1.0:
    p = np.where(keep, np.exp(z - z.max()), 0.0)
    p /= p.sum()
    mass, cut = 0.0, None
    for i in order:
      if not keep[i]:
        continue
      if mass >= top_p:
        break
      mass += p[i]
      cut = z[i]
    keep &= z >= cut
  p = np.where(keep, np.exp(z - z.max()), 0.0)
  return p / p.sum()


@pytest.mark.parametrize(
  "temperature,top_k,top_p",
  [(1.0, 0, 1.0), (0.7, 5, 1.0), (1.3, 0, 0.8), (0.7, 20, 0.8), (1.0, 1, 1.0), (2.0, 0, 0.05)],
)
def test_filtered_distribution_matches_numpy(temperature, top_k, top_p):
  logits = np.random.default_rng(0).normal(0, 3, (6, 50)).astype(np.float32)
  params = SamplingParams(temperature, top_k, top_p)
  got = np.asarray(jax.nn.softmax(filter_logits(jnp.asarray(logits), params), axis=-1))
  for row in range(6):
    want = reference_probs(logits[row], temperature, top_k, top_p)
    np.testing.assert_allclose(got[row], want, atol=1e-6)


def test_draws_follow_the_filtered_distribution():
  logits = jnp.asarray([[2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -3.0]])
  params = SamplingParams(temperature=0.8, top_k=6, top_p=0.9)
  n = 20000
  keys = token_keys(7, jnp.zeros(n, jnp.int32), jnp.arange(n))
  draws = jax.vmap(lambda k: sample(logits, params, k[None])[0])(keys)
  counts = np.bincount(np.asarray(draws), minlength=8)
  expected = reference_probs(np.asarray(logits[0]), 0.8, 6, 0.9) * n
  assert counts[expected == 0].sum() == 0, counts
  support = expected > 0
  chi2 = float((((counts - expected) ** 2)[support] / expected[support]).sum())
  # df = support - 1 <= 5; the 1e-4 upper quantile of chi2(5) is 25.7.
  assert chi2 < 25.7, (chi2, counts, expected)


def test_keys_depend_only_on_seed_request_and_position():
  a = token_keys(1, jnp.array([3, 4]), jnp.array([10, 10]))
  b = token_keys(1, jnp.array([4, 3]), jnp.array([10, 10]))
  data = lambda k: np.asarray(jax.random.key_data(k))
  np.testing.assert_array_equal(data(a)[0], data(b)[1])
  assert not np.array_equal(data(a)[0], data(a)[1])
  assert not np.array_equal(data(a), data(token_keys(2, jnp.array([3, 4]), jnp.array([10, 10]))))


def test_greedy_is_argmax():
  logits = jnp.asarray(np.random.default_rng(1).normal(size=(4, 30)), jnp.float32)
  keys = token_keys(0, jnp.arange(4), jnp.zeros(4, jnp.int32))
  np.testing.assert_array_equal(sample(logits, SamplingParams(), keys), jnp.argmax(logits, -1))


@pytest.mark.parametrize(
  "kwargs,message",
  [
    (dict(temperature=-0.5), "temperature must be >= 0"),
    (dict(temperature=float("nan")), "temperature must be >= 0"),
    (dict(temperature=float("inf")), "temperature must be >= 0 and finite"),
    (dict(top_p=float("nan")), "top_p must be in"),
    (dict(top_p=0.0), "top_p must be in \\(0, 1\\]"),
    (dict(top_p=1.5), "top_p must be in \\(0, 1\\]"),
    (dict(top_k=-1), "top_k must be >= 0"),
  ],
)
def test_invalid_sampling_parameters_are_rejected(kwargs, message):
  with pytest.raises(ValueError, match=message):
    SamplingParams(**kwargs)


ROW_PARAMS = [(1.0, 0, 1.0), (0.7, 5, 1.0), (1.3, 0, 0.8), (0.0, 0, 1.0), (0.7, 20, 0.8)]


def test_per_row_parameters_match_the_numpy_reference_row_by_row():
  """RowSampling: row b filtered with parameters b (here also through a [B, G, V] block);
  a temperature-0 row is one-hot at its first maximum."""
  rng = np.random.default_rng(3)
  logits = rng.normal(0, 3, (len(ROW_PARAMS), 3, 50)).astype(np.float32)
  logits[3, 1, [4, 9]] = logits[3, 1].max() + 1.0  # a tie for the greedy row: the first wins
  rows = RowSampling.of([SamplingParams(*p) for p in ROW_PARAMS])
  got = np.asarray(jax.nn.softmax(filter_logits(jnp.asarray(logits), rows), axis=-1))
  for b, (temperature, top_k, top_p) in enumerate(ROW_PARAMS):
    for s in range(3):
      if temperature == 0:
        want = np.eye(50)[np.argmax(logits[b, s])]
      else:
        want = reference_probs(logits[b, s], temperature, top_k, top_p)
      np.testing.assert_allclose(got[b, s], want, atol=1e-6)
  assert got[3, 1, 4] == 1.0


def test_per_row_draws_equal_the_static_draws():
  """Each row's draw with RowSampling is the draw `sample` makes with that row's parameters
  alone (same keys): the serving engine's slots reproduce single-request outputs."""
  logits = jnp.asarray(np.random.default_rng(4).normal(0, 2, (len(ROW_PARAMS), 40)), jnp.float32)
  rows = RowSampling.of([SamplingParams(*p) for p in ROW_PARAMS])
  for position in range(20):
    keys = token_keys(
      jnp.arange(5, dtype=jnp.uint32), jnp.zeros(5, jnp.int32), jnp.full(5, position)
    )
    got = np.asarray(sample(logits, rows, keys))
    for b, p in enumerate(ROW_PARAMS):
      want = sample(
        logits[b : b + 1],
        SamplingParams(*p),
        token_keys(b, jnp.zeros(1, jnp.int32), jnp.full(1, position)),
      )
      assert got[b] == int(want[0]), (position, b)
