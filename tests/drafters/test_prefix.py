"""PrefixDrafter: the first g slots of another drafter's proposals, verified alone; lossless."""

import numpy as np
import pytest

from dspark_jax.decoding.generate import GenerateConfig, generate
from dspark_jax.decoding.loop import SpecConfig, speculative_generate
from dspark_jax.decoding.sampling import SamplingParams
from dspark_jax.drafters.ngram import NgramDrafter
from dspark_jax.drafters.prefix import PrefixDrafter
from tests.distribution import chi2_quantile_1e3, chi_square, exact_sequence_probs, sampled_requests
from tests.tiny import tiny_model
from tests.tiny_drafters import propose_args, random_drafter

PROMPTS = [[5, 9, 2, 33, 7, 1, 60, 5, 9, 2], [11, 4], [8, 8, 8, 20, 3, 8, 8], [1, 2, 3, 1, 2]]
SMALL = {"num_layers": 1, "target_layer_ids": (-1, 0)}


@pytest.mark.parametrize("kind", ["dspark-markov", "dflash", "eagle3"])
def test_greedy_output_equals_plain_and_slots_are_cut(kind):
  config, params = tiny_model("llama", scale=5.0)
  inner, dparams = random_drafter(kind, config, params, **SMALL)
  drafter = PrefixDrafter(inner, 2)
  plain = generate(params, config, PROMPTS, GenerateConfig(20, stop_ids=(7,))).tokens
  got = speculative_generate(
    params, config, drafter, dparams, PROMPTS, SpecConfig(20, stop_ids=(7,)), trace=True
  )
  assert got.tokens == plain
  assert got.admitted.shape == (len(PROMPTS), 2)
  assert got.trace.verified.max() == 2
  if kind.startswith("dspark"):
    # The first round's proposal is the inner drafter's (same prompt state): its confidences
    # are the first two of the full proposal's.
    full = speculative_generate(
      params, config, inner, dparams, PROMPTS, SpecConfig(20, stop_ids=(7,)), trace=True
    )
    np.testing.assert_allclose(
      got.trace.confidence[:, 0], full.trace.confidence[:, 0, :2], rtol=1e-6
    )


def test_ngram_prefix_keeps_num_valid_within_the_cut():
  config, params = tiny_model("llama", scale=5.0)
  drafter = PrefixDrafter(NgramDrafter(5, config.vocab_size), 1)
  prompts = [[3, 4, 5, 3, 4, 5, 3, 4], [1, 2, 3, 1, 2]]
  plain = generate(params, config, prompts, GenerateConfig(16)).tokens
  got = speculative_generate(params, config, drafter, None, prompts, SpecConfig(16))
  assert got.tokens == plain
  assert got.admitted.shape == (2, 1)


def test_bad_lengths_are_refused():
  drafter = NgramDrafter(4, 64)
  for g in (0, 5):
    with pytest.raises(ValueError, match="1 <= g <= 4"):
      PrefixDrafter(drafter, g)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["dspark-markov", "eagle3"])
def test_output_distribution_is_the_target_distribution(kind):
  """First 3 tokens of 20,000 sampled requests vs exact enumeration, proposals cut to 2."""
  vocab = 6
  config, params = tiny_model("llama", scale=3.0, vocab_size=vocab)
  inner, dparams = random_drafter(kind, config, params, seed=3, mask_token_id=5, **SMALL)
  drafter = PrefixDrafter(inner, 2)
  sampling = SamplingParams(0.8, top_k=5)
  prompt = [1, 2, 3, 1]
  exact = exact_sequence_probs(config, params, prompt, 3, sampling)
  out = sampled_requests(params, config, drafter, dparams, prompt, sampling)
  stat, dof = chi_square([tuple(t) for t in out.tokens], exact)
  assert stat < chi2_quantile_1e3(dof), (kind, stat, dof)
  assert 0.1 * out.admitted.sum() < out.accepted.sum() < out.admitted.sum()


@pytest.mark.parametrize("kind", ["dspark-markov", "dspark-rnn", "dflash"])
def test_propose_prefix_equals_the_full_proposals_first_slots(kind):
  """Block drafters draft only the kept slots; sampled tokens, logits, confidences unchanged."""
  config, params = tiny_model("llama", scale=5.0)
  drafter, dparams = random_drafter(kind, config, params, **SMALL)
  args = propose_args(drafter, dparams, config, params, SamplingParams(0.9))
  full, _ = drafter.propose(*args)
  for g in (1, 3):
    cut, _ = PrefixDrafter(drafter, g).propose(*args)
    np.testing.assert_array_equal(cut.tokens, full.tokens[:, :g])
    np.testing.assert_allclose(cut.logits, full.logits[:, :g], rtol=1e-5, atol=1e-5)
    if full.confidence is not None:
      np.testing.assert_allclose(cut.confidence, full.confidence[:, :g], rtol=1e-5, atol=1e-6)
