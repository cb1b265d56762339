"""Threshold replay against a round-by-round loop, and against decoding with those lengths."""

import numpy as np

from dspark_jax.decoding.loop import SpecConfig, speculative_generate
from dspark_jax.decoding.sampling import SamplingParams
from dspark_jax.eval.threshold import threshold_sweep, verified_lengths
from tests.tiny import tiny_model
from tests.tiny_drafters import random_drafter


def test_sweep_equals_a_loop_over_rounds():
  rng = np.random.default_rng(0)
  conf = rng.uniform(size=(200, 5))
  accepted = rng.integers(0, 6, 200)
  for cumulative in (False, True):
    got = threshold_sweep(conf, accepted, [0.0, 0.3, 0.6, 0.95], cumulative)
    for m, t in enumerate(got["thresholds"]):
      ver, acc = [], []
      for c, n in zip(conf, accepted, strict=True):
        score, length = 1.0, 0
        for ck in c:
          score = score * ck if cumulative else ck
          if score < t:
            break
          length += 1
        ver.append(length)
        acc.append(min(length, n))
      assert got["verified_per_round"][m] == np.mean(ver)
      assert got["accepted_per_round"][m] == np.mean(acc)
      assert got["tokens_per_round"][m] == np.mean(acc) + 1
  assert threshold_sweep(conf, accepted, [0.0])["verified_per_round"] == [5.0]  # t = 0: all


def test_replay_predicts_decoding_with_the_shorter_verification():
  """The first round of each prompt, replayed at length L, accepts what decoding with
  verify_len = L accepts (same keys, same drafts)."""
  config, params = tiny_model("llama", scale=2.0)
  drafter, dparams = random_drafter(
    "dspark-markov", config, params, num_layers=1, target_layer_ids=(-1, 0)
  )
  prompts = [[5, 9, 2, 33, 7], [11, 4], [8, 8, 8, 20], [1, 2, 3, 1, 2], [40, 41, 42]] * 4
  spec = SpecConfig(2, SamplingParams(1.0))  # one round after the prefill token
  full = speculative_generate(params, config, drafter, dparams, prompts, spec, seed=1, trace=True)
  first = full.trace.accepted[:, 0]
  conf = full.trace.confidence[:, 0]
  lengths = verified_lengths(conf, [0.3])[0]
  short = speculative_generate(
    params, config, drafter, dparams, prompts, spec, seed=1, verify_len=lengths
  )
  np.testing.assert_array_equal(short.accepted.sum(1), np.minimum(first, lengths))
