"""Pallas flat-buffer verification (interpret mode) against the jnp reference, exactly."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dspark_jax.kernels import dispatch
from dspark_jax.kernels.reference import ref_verify_flat
from dspark_jax.kernels.verify import verify_flat

G = 4


def ragged_inputs(seed, vocab, lengths, near_target=False):
  """A flat buffer with a gap row between segments; every row no segment covers is NaN."""
  rng = np.random.default_rng(seed)
  lengths = np.asarray(lengths, np.int32)
  offsets = np.concatenate([[1], 1 + np.cumsum(lengths + 2)[:-1]]).astype(np.int32)
  n_rows = int(offsets[-1] + lengths[-1] + 2)
  target = np.full((n_rows, vocab), np.nan, np.float32)
  draft = np.full((n_rows, vocab), np.nan, np.float32)
  tokens = np.full(n_rows, -1, np.int32)
  uniforms = np.full(n_rows, np.nan, np.float32)
  for off, n in zip(offsets, lengths, strict=True):
    target[off : off + n + 1] = rng.normal(0, 2, (n + 1, vocab))
    noise = rng.normal(0, 0.5 if near_target else 2, (n, vocab))
    draft[off : off + n] = target[off : off + n] + noise if near_target else noise
    tokens[off : off + n] = rng.integers(0, vocab, n)
    # Make some drafts the target's favourite so greedy acceptance runs happen.
    favourite = rng.random(n) < 0.6
    tokens[off : off + n] = np.where(
      favourite, target[off : off + n].argmax(-1), tokens[off : off + n]
    )
    uniforms[off : off + n] = rng.uniform(0.001, 1, n)
  gumbel = rng.gumbel(size=(len(lengths), vocab)).astype(np.float32)
  return tuple(map(jnp.asarray, (target, draft, tokens, uniforms, gumbel, offsets, lengths)))


@pytest.mark.parametrize("temperature", [0.0, 1.0, 0.6])
@pytest.mark.parametrize("vocab,block_v", [(300, 128), (256, 64)])
def test_kernel_equals_reference(temperature, vocab, block_v):
  for seed in range(3):
    lengths = np.random.default_rng(seed).integers(0, G + 1, 7)
    lengths[seed] = 0  # always some zero-length segment
    args = ragged_inputs(seed, vocab, lengths, near_target=seed % 2 == 1)
    want = ref_verify_flat(*args, max_len=G, temperature=temperature)
    got = verify_flat(*args, max_len=G, temperature=temperature, block_v=block_v, interpret=True)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    assert (np.asarray(want[0]) <= lengths).all()


def test_acceptance_actually_varies():
  """Guards the comparison above against a degenerate case (all rejected or all accepted)."""
  lengths = [4, 4, 4, 4, 3, 2, 0]
  args = ragged_inputs(5, 300, lengths, near_target=True)
  num, _ = ref_verify_flat(*args, max_len=G, temperature=1.0)
  assert len(set(np.asarray(num).tolist())) >= 3


def test_reference_matches_the_loop_verifier_on_one_request():
  """The flat reference decides acceptance like decoding.verify given the same uniforms."""
  from dspark_jax.decoding.sampling import SamplingParams
  from dspark_jax.decoding.verify import ACCEPT_STREAM, slot_keys, verify

  rng = np.random.default_rng(0)
  vocab = 50
  target = rng.normal(0, 2, (1, G + 1, vocab)).astype(np.float32)
  draft = (target[:, :G] + rng.normal(0, 0.3, (1, G, vocab))).astype(np.float32)
  tokens = target[:, :G].argmax(-1).astype(np.int32)
  seed, req, pos = 3, jnp.zeros(1, jnp.int32), jnp.full(1, 10, jnp.int32)
  num, _ = verify(
    jnp.asarray(target),
    jnp.asarray(tokens),
    jnp.asarray(draft),
    jnp.full(1, G),
    SamplingParams(1.0),
    seed,
    req,
    pos,
  )
  keys = slot_keys(seed, req, pos, G, ACCEPT_STREAM)
  uniforms = jax.vmap(jax.vmap(jax.random.uniform))(keys)[0]
  flat_num, _ = ref_verify_flat(
    jnp.asarray(target[0]),
    jnp.pad(jnp.asarray(draft[0]), ((0, 1), (0, 0))),
    jnp.pad(jnp.asarray(tokens[0]), (0, 1)),
    jnp.pad(uniforms, (0, 1), constant_values=0.5),
    jnp.zeros((1, vocab)),
    jnp.zeros(1, jnp.int32),
    jnp.full(1, G, jnp.int32),
    max_len=G,
    temperature=1.0,
  )
  assert int(flat_num[0]) == int(num[0])


def test_dispatch_picks_by_platform():
  assert dispatch.use_pallas("tpu") == (True, False)
  assert dispatch.use_pallas("gpu") == (True, False)
  assert dispatch.use_pallas("cpu") == (False, True)
  assert dispatch.use_pallas("cpu", force_interpret=True) == (True, True)
  args = ragged_inputs(0, 64, [2, 0])
  num, _ = dispatch.verify_flat(*args, max_len=G, temperature=1.0, force_interpret=True, block_v=64)
  np.testing.assert_array_equal(num, ref_verify_flat(*args, max_len=G, temperature=1.0)[0])
