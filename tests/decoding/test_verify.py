"""Verification: greedy prefix rule, and one-step losslessness by a chi-square test."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dspark_jax.decoding.sampling import SamplingParams, filter_logits
from dspark_jax.decoding.verify import verify

# 1e-4 upper quantiles of chi-square by degrees of freedom (scipy-free, from tables).
CHI2_1E4 = {3: 21.11, 4: 23.51, 5: 25.74, 6: 27.86, 7: 29.88}


def test_greedy_accepts_the_matching_prefix_within_the_length():
  rng = np.random.default_rng(0)
  target = rng.normal(size=(4, 5, 11)).astype(np.float32)
  best = target.argmax(-1)
  drafts = best[:, :4].copy()
  drafts[0, 2] = (drafts[0, 2] + 1) % 11  # row 0: mismatch at slot 2
  drafts[1, 0] = (drafts[1, 0] + 1) % 11  # row 1: mismatch at slot 0
  lengths = np.array([4, 4, 4, 2])  # row 2: all four match; row 3: only 2 admitted
  num, nxt = verify(
    jnp.asarray(target),
    jnp.asarray(drafts),
    jnp.zeros((4, 4, 11)),
    jnp.asarray(lengths),
    SamplingParams(),
    0,
    jnp.arange(4),
    jnp.zeros(4, int),
  )
  assert num.tolist() == [2, 0, 4, 2]
  assert nxt.tolist() == [best[0, 2], best[1, 0], best[2, 4], best[3, 2]]


def one_step_first_tokens(verify_fn, p_target, draft_logits, sampling, n, one_hot=False):
  """The first committed token of n independent rounds with G = 1."""
  v = len(p_target)
  keys = jax.random.split(jax.random.key(11), n)
  if one_hot:
    drafts = jax.vmap(lambda k: jax.random.categorical(k, draft_logits))(keys)
    d_logits = jnp.where(jnp.arange(v)[None] == drafts[:, None], 0.0, -jnp.inf)
  else:
    weights = filter_logits(draft_logits[None], sampling)[0]
    drafts = jax.vmap(lambda k: jax.random.categorical(k, weights))(keys)
    d_logits = jnp.broadcast_to(draft_logits, (n, v))
  t_logits = jnp.broadcast_to(jnp.log(p_target), (n, 2, v))
  num, nxt = verify_fn(
    t_logits,
    drafts[:, None].astype(jnp.int32),
    d_logits[:, None],
    jnp.ones(n, jnp.int32),
    sampling,
    3,
    jnp.arange(n),
    jnp.zeros(n, jnp.int32),
  )
  return np.asarray(jnp.where(num > 0, drafts, nxt))


def chi2(samples, probs):
  counts = np.bincount(samples, minlength=len(probs))
  expected = probs * len(samples)
  if counts[expected == 0].sum():
    return float("inf"), 3  # mass where the target has none: fails any threshold
  keep = expected > 0
  return float((((counts - expected) ** 2)[keep] / expected[keep]).sum()), int(keep.sum()) - 1


CASES = [
  (SamplingParams(1.0), False),
  (SamplingParams(1.0), True),  # one-hot draft, as the n-gram drafter's
  (SamplingParams(0.7, top_k=5), False),
  (SamplingParams(1.3, top_p=0.8), True),
]


@pytest.mark.parametrize("sampling,one_hot", CASES)
def test_one_round_is_lossless(sampling, one_hot):
  p_target = jnp.asarray([0.3, 0.25, 0.15, 0.1, 0.08, 0.07, 0.05])
  draft_logits = jnp.asarray([0.1, 1.5, -0.5, 0.9, 0.0, -1.0, 0.4])
  samples = one_step_first_tokens(verify, p_target, draft_logits, sampling, 40000, one_hot)
  want = np.asarray(jax.nn.softmax(filter_logits(jnp.log(p_target)[None], sampling)[0]))
  stat, dof = chi2(samples, want)
  assert stat < CHI2_1E4[dof], (stat, np.bincount(samples, minlength=7), want)


def resample_from_target(t_logits, drafts, d_logits, lengths, sampling, seed, req, pos):
  """A classic bug: after a rejection, draw from p_t instead of the residual."""
  num, _ = verify(t_logits, drafts, d_logits, lengths, sampling, seed, req, pos)
  keys = jax.random.split(jax.random.key(5), drafts.shape[0])
  weights = filter_logits(t_logits[:, 0], sampling)
  return num, jax.vmap(jax.random.categorical)(keys, weights).astype(jnp.int32)


def test_the_test_catches_a_wrong_residual():
  p_target = jnp.asarray([0.3, 0.25, 0.15, 0.1, 0.08, 0.07, 0.05])
  draft_logits = jnp.asarray([0.1, 1.5, -0.5, 0.9, 0.0, -1.0, 0.4])
  sampling = SamplingParams(1.0)
  samples = one_step_first_tokens(resample_from_target, p_target, draft_logits, sampling, 40000)
  stat, dof = chi2(samples, np.asarray(p_target))
  assert stat > CHI2_1E4[dof]


@pytest.mark.parametrize(
  "sampling", [SamplingParams(), SamplingParams(1.0), SamplingParams(0.8, top_k=5, top_p=0.9)]
)
def test_a_round_without_drafts_draws_what_verifying_zero_drafts_draws(sampling):
  """The decode loop's plain rounds call `verify` with G = 0 (only the anchor's logits); that
  must be the very draw of a G-slot verification whose lengths are all 0."""
  rng = np.random.default_rng(3)
  b, g, v = 64, 4, 23
  target = jnp.asarray(rng.normal(size=(b, g + 1, v)).astype(np.float32) * 2)
  drafts = jnp.asarray(rng.integers(0, v, (b, g)).astype(np.int32))
  draft_logits = jnp.asarray(rng.normal(size=(b, g, v)).astype(np.float32))
  keys = (sampling, jnp.uint32(9), jnp.arange(b, dtype=jnp.uint32), jnp.arange(b) % 7 + 3)
  zeros = jnp.zeros(b, jnp.int32)
  num, nxt = verify(target, drafts, draft_logits, zeros, *keys)
  num0, nxt0 = verify(target[:, :1], drafts[:, :0], draft_logits[:, :0], zeros, *keys)
  assert num0.tolist() == num.tolist() == [0] * b
  assert nxt0.tolist() == nxt.tolist()
  assert len(set(nxt.tolist())) > 3  # the draws really vary across rows
