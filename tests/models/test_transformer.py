"""Properties of the target forward: caching, padding, batch composition, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dspark_jax.models.kv_cache import KVCache
from dspark_jax.models.transformer import forward_jit as forward
from tests.tiny import TINY_VOCAB, tiny_model

FAMILIES = ["llama", "qwen3", "gemma3"]


def _positions(batch, start, length):
  return jnp.broadcast_to(jnp.arange(start, start + length), (batch, length))


@pytest.mark.parametrize("family", FAMILIES)
def test_incremental_decoding_equals_full_forward(family):
  config, params = tiny_model(family, scale=5.0)
  tokens = jax.random.randint(jax.random.key(1), (2, 11), 0, TINY_VOCAB)
  full = forward(params, tokens, _positions(2, 0, 11), config=config, feature_layers=(-1, 1))

  cache = KVCache.create(config, 2, 16)
  out = forward(
    params, tokens[:, :5], _positions(2, 0, 5), cache, config=config, feature_layers=(-1, 1)
  )
  logits, features = [out.logits], [out.features]
  for t in range(5, 11):  # one token at a time, then check the 3-token verification shape too
    out = forward(
      params,
      tokens[:, t : t + 1],
      _positions(2, t, 1),
      out.cache,
      config=config,
      feature_layers=(-1, 1),
    )
    logits.append(out.logits)
    features.append(out.features)
  np.testing.assert_allclose(jnp.concatenate(logits, 1), full.logits, atol=2e-5, rtol=0)
  np.testing.assert_allclose(jnp.concatenate(features, 1), full.features, atol=2e-5, rtol=0)
  assert out.cache.lengths.tolist() == [11, 11]


def test_rollback_is_setting_the_length():
  """Tokens written past a row's length are invisible: rewriting after a rollback matches."""
  config, params = tiny_model("gemma3", scale=5.0)
  tokens = jax.random.randint(jax.random.key(2), (1, 9), 0, TINY_VOCAB)
  full = forward(params, tokens, _positions(1, 0, 9), config=config)
  cache = forward(
    params, tokens[:, :6], _positions(1, 0, 6), KVCache.create(config, 1, 12), config=config
  ).cache
  junk = jax.random.randint(jax.random.key(3), (1, 4), 0, TINY_VOCAB)
  cache = forward(params, junk, _positions(1, 6, 4), cache, config=config).cache
  cache = cache.with_lengths(jnp.array([6]))  # reject all four
  out = forward(params, tokens[:, 6:], _positions(1, 6, 3), cache, config=config)
  np.testing.assert_allclose(out.logits, full.logits[:, 6:], atol=2e-5, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_padding_and_batch_composition_do_not_change_a_row(family):
  config, params = tiny_model(family, scale=5.0)
  rng = np.random.default_rng(0)
  rows = [rng.integers(0, TINY_VOCAB, n) for n in (7, 3, 5)]
  width = 8
  padded = np.zeros((3, width), np.int32)
  for i, r in enumerate(rows):
    padded[i, : len(r)] = r
    padded[i, len(r) :] = rng.integers(0, TINY_VOCAB, width - len(r))  # junk, not zeros
  batched = forward(
    params, padded, _positions(3, 0, width), KVCache.create(config, 3, 12), config=config
  )
  for i, r in enumerate(rows):
    alone = forward(params, r[None], _positions(1, 0, len(r)), config=config)
    np.testing.assert_allclose(batched.logits[i, : len(r)], alone.logits[0], atol=2e-5, rtol=0)


def test_sliding_window_limits_what_a_query_sees():
  """With window 3, logits at position t must not depend on tokens before t - 2 (one layer)."""
  config, params = tiny_model("gemma3", num_layers=1, layer_windows=(3,), scale=5.0)
  tokens = jax.random.randint(jax.random.key(4), (1, 10), 0, TINY_VOCAB)
  changed = tokens.at[0, 0:6].set((tokens[0, 0:6] + 1) % TINY_VOCAB)
  a = forward(params, tokens, _positions(1, 0, 10), config=config).logits
  b = forward(params, changed, _positions(1, 0, 10), config=config).logits
  np.testing.assert_array_equal(a[0, 8:], b[0, 8:])  # positions 8, 9 see only 6..9
  assert not np.allclose(a[0, 7], b[0, 7])  # position 7 sees 5, which changed


def test_feature_layer_out_of_range_is_an_error():
  config, params = tiny_model("llama")
  tokens = jnp.zeros((1, 2), jnp.int32)
  with pytest.raises(ValueError, match="feature layer ids \\[2\\]"):
    forward(params, tokens, _positions(1, 0, 2), config=config, feature_layers=(2,))
