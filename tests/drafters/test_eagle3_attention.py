"""The training-time test's diagonal attention equals masked attention over all step entries."""

import jax.numpy as jnp
import numpy as np
import pytest

from dspark_jax.drafters.eagle3 import ttt_attend
from dspark_jax.models.layers import attend


@pytest.mark.parametrize("step", [0, 1, 3])
def test_ttt_attend_equals_attention_with_the_full_mask(step):
  b, t, h, n, k = 2, 9, 4, 2, 8
  rng = np.random.default_rng(step)
  normal = lambda *shape: jnp.asarray(rng.standard_normal(shape), jnp.float32)
  q = normal(b, t, h, k)
  keys = [normal(b, n, t, k) for _ in range(step + 1)]
  values = [normal(b, n, t, k) for _ in range(step + 1)]
  i, p = jnp.arange(t)[:, None], jnp.arange(t)[None, :]
  # Step-0 entries up to i - j; the step-s entry at i - j + s.
  masks = [p <= i - step] + [p == i - step + s for s in range(1, step + 1)]
  mask = jnp.broadcast_to(jnp.concatenate(masks, 1), (b, t, t * (step + 1)))
  want = attend(q, jnp.concatenate(keys, 2), jnp.concatenate(values, 2), mask, 0.35, None)
  np.testing.assert_allclose(ttt_attend(q, keys, values, 0.35), want, atol=2e-6)
