"""The ragged-attention Pallas kernel (interpret mode) against its jnp reference, and the
reference against a per-query float64 NumPy loop."""

import jax.numpy as jnp
import numpy as np
import pytest

from dspark_jax.kernels import dispatch
from dspark_jax.kernels import ragged_attention as kernel_module
from dspark_jax.kernels.ragged_attention import ragged_attention
from dspark_jax.kernels.reference import ref_ragged_attention

B, T, H, N, K, S = 5, 4, 6, 2, 8, 40


def ragged_cache(seed, start, num_q, capacity=S):
  """q [B, T, H, K] and a cache whose slots past each row's valid range are NaN."""
  rng = np.random.default_rng(seed)
  q = rng.normal(size=(B, T, H, K)).astype(np.float32)
  k = rng.normal(size=(B, N, capacity, K)).astype(np.float32)
  v = rng.normal(size=(B, N, capacity, K)).astype(np.float32)
  for b in range(B):
    k[b, :, start[b] + num_q[b] :] = np.nan
    v[b, :, start[b] + num_q[b] :] = np.nan
  return q, k, v


def numpy_attention(q, k, v, start, num_q, scale, softcap=None, window=None):
  out = np.zeros(q.shape, np.float64)
  g = H // N
  for b in range(B):
    for t in range(num_q[b]):
      slot = start[b] + t
      seen = [s for s in range(slot + 1) if window is None or slot - s < window]
      for h in range(H):
        kk, vv = k[b, h // g, seen].astype(np.float64), v[b, h // g, seen].astype(np.float64)
        scores = kk @ q[b, t, h].astype(np.float64) * scale
        if softcap is not None:
          scores = np.tanh(scores / softcap) * softcap
        w = np.exp(scores - scores.max())
        out[b, t, h] = (w / w.sum()) @ vv
  return out


# Rows: a zero-length row, a fresh row (start 0), one reaching the capacity exactly, a decode
# step (one query) and a partial block.
START = np.array([7, 0, S - T, 19, 3], np.int32)
NUM_Q = np.array([0, 4, 4, 1, 2], np.int32)


@pytest.mark.parametrize("softcap,window", [(None, None), (5.0, None), (None, 6)])
def test_reference_equals_a_float64_loop(softcap, window):
  q, k, v = ragged_cache(0, START, NUM_Q)
  got = ref_ragged_attention(
    *map(jnp.asarray, (q, k, v, START, NUM_Q)), scale=0.3, softcap=softcap, window=window
  )
  assert np.isfinite(np.asarray(got)).all()
  want = numpy_attention(q, k, v, START, NUM_Q, 0.3, softcap, window)
  np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("block_s", [8, 16, 128])  # 128 > S: one block clamped to the capacity
@pytest.mark.parametrize("softcap,window", [(None, None), (5.0, 6)])
def test_kernel_equals_the_reference_on_ragged_rows(block_s, softcap, window):
  for seed in range(2):
    q, k, v = ragged_cache(seed, START, NUM_Q)
    args = tuple(map(jnp.asarray, (q, k, v, START, NUM_Q)))
    kw = dict(scale=0.3, softcap=softcap, window=window)
    want = ref_ragged_attention(*args, **kw)
    got = ragged_attention(*args, **kw, block_s=block_s, interpret=True)
    assert np.isfinite(np.asarray(got)).all()  # no NaN slot was read
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(got)[0], 0.0)  # the zero-length row


def test_a_capacity_that_is_not_a_multiple_of_the_block():
  q, k, v = ragged_cache(3, START, NUM_Q, capacity=S)
  args = tuple(map(jnp.asarray, (q, k, v, START, NUM_Q)))
  want = ref_ragged_attention(*args, scale=0.3)
  got = ragged_attention(*args, scale=0.3, block_s=12, interpret=True)  # 40 = 3 x 12 + 4
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_an_off_by_one_in_the_kernels_mask_fails_the_comparison(monkeypatch):
  """The test of the test: a kernel whose causal mask lets each query see one slot ahead (a
  NaN slot at a row's end, or the next query's key) no longer matches."""
  real = kernel_module._kernel

  def shifted(start_ref, *refs, **kw):
    class Shifted:  # start + 1: every query's slot moves one ahead
      def __getitem__(self, i):
        return start_ref[i] + 1

    return real(Shifted(), *refs, **kw)

  monkeypatch.setattr(kernel_module, "_kernel", shifted)
  q, k, v = ragged_cache(0, START, NUM_Q)
  args = tuple(map(jnp.asarray, (q, k, v, START, NUM_Q)))
  want = ref_ragged_attention(*args, scale=0.3)
  got = kernel_module.ragged_attention.__wrapped__(*args, scale=0.3, block_s=8, interpret=True)
  assert not np.allclose(np.nan_to_num(np.asarray(got), nan=1e9), want, rtol=1e-3, atol=1e-3)


def test_dispatch_uses_the_reference_on_cpu_and_the_kernel_when_asked():
  q, k, v = ragged_cache(1, START, NUM_Q)
  args = tuple(map(jnp.asarray, (q, k, v, START, NUM_Q)))
  on_cpu = dispatch.ragged_attention(*args, scale=0.3)
  forced = dispatch.ragged_attention(*args, scale=0.3, force_interpret=True, block_s=8)
  np.testing.assert_allclose(on_cpu, ref_ragged_attention(*args, scale=0.3), rtol=0, atol=0)
  np.testing.assert_allclose(forced, on_cpu, rtol=1e-5, atol=1e-6)
