"""The loop's round trace: it leaves the output unchanged and agrees with the summed statistics."""

import numpy as np
import pytest

from dspark_jax.decoding.loop import SpecConfig, speculative_generate
from dspark_jax.decoding.sampling import SamplingParams
from dspark_jax.drafters.ngram import NgramDrafter
from dspark_jax.eval.calibration import rounds_from_trace
from tests.tiny import TINY_VOCAB, tiny_model
from tests.tiny_drafters import random_drafter

PROMPTS = [[5, 9, 2, 33, 7, 1, 60, 5, 9, 2], [11, 4], [8, 8, 8, 20, 3, 8, 8], [1, 2, 3, 1, 2]]


def test_trace_matches_the_statistics_and_leaves_the_output_unchanged():
  config, params = tiny_model("llama", scale=3.0)
  drafter, dparams = random_drafter(
    "dspark-markov", config, params, num_layers=1, target_layer_ids=(-1, 0)
  )
  spec = SpecConfig(16, SamplingParams(1.0), stop_ids=(7,))
  plain = speculative_generate(params, config, drafter, dparams, PROMPTS, spec, seed=2)
  lengths = [4, 2, 4, 0]  # shorter verifications too
  got = speculative_generate(
    params, config, drafter, dparams, PROMPTS, spec, seed=2, trace=True, verify_len=lengths
  )
  again = speculative_generate(
    params, config, drafter, dparams, PROMPTS, spec, seed=2, verify_len=lengths
  )
  assert got.tokens == again.tokens and plain.trace is None
  t, g = got.trace, drafter.draft_len
  ran = t.verified >= 0
  np.testing.assert_array_equal(ran.sum(1), got.rounds)
  assert (ran[:, :-1] >= ran[:, 1:]).all()  # a row's rounds fill its first columns
  slots = np.arange(g)[None, None]
  np.testing.assert_array_equal(
    ((slots < t.accepted[..., None]) & ran[..., None]).sum(1), got.accepted
  )
  np.testing.assert_array_equal(
    ((slots < t.verified[..., None]) & ran[..., None]).sum(1), got.admitted
  )
  conf = t.confidence[ran]
  assert np.all((conf > 0) & (conf < 1))
  z, y = rounds_from_trace(t, g)  # rows verifying all G slots only
  assert len(z) == ran[[0, 2]].sum() and y.shape == z.shape
  np.testing.assert_array_equal(y.sum(0), got.accepted[[0, 2]].sum(0))


def test_calibration_needs_a_confidence_head():
  config, params = tiny_model("llama", scale=3.0)
  drafter = NgramDrafter(3, TINY_VOCAB, min_ngram=1)
  got = speculative_generate(params, config, drafter, None, PROMPTS, SpecConfig(12), trace=True)
  with pytest.raises(ValueError, match="no confidence"):
    rounds_from_trace(got.trace, 3)
