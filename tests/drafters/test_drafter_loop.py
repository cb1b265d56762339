"""DSpark (each head), DFlash and Eagle3 with random weights in the speculative loop: lossless."""

import numpy as np
import pytest

from dspark_jax.decoding.generate import GenerateConfig, generate
from dspark_jax.decoding.loop import SpecConfig, speculative_generate
from dspark_jax.decoding.sampling import SamplingParams
from tests.distribution import chi2_quantile_1e3, chi_square, exact_sequence_probs, sampled_requests
from tests.tiny import tiny_model
from tests.tiny_drafters import KINDS, random_drafter

PROMPTS = [[5, 9, 2, 33, 7, 1, 60, 5, 9, 2], [11, 4], [8, 8, 8, 20, 3, 8, 8], [1, 2, 3, 1, 2]]


# One drafter layer over the 2-layer tiny target's embedding and first-layer outputs: small
# graphs compile fast, and every code path of the drafter is still exercised.
SMALL = {"num_layers": 1, "target_layer_ids": (-1, 0)}
# The Gemma 3 case repeats the Llama one on another family: extended tier.
CASES = [(kind, "llama") for kind in KINDS] + [
  pytest.param("dspark-markov", "gemma3", marks=pytest.mark.extended)
]


@pytest.mark.parametrize(("kind", "family"), CASES)
def test_greedy_speculative_equals_plain_greedy(kind, family):
  config, params = tiny_model(family, scale=5.0)
  drafter, dparams = random_drafter(kind, config, params, **SMALL)
  stop = (7,)
  for batch in (1, 4):
    prompts = PROMPTS[:batch]
    plain = generate(params, config, prompts, GenerateConfig(20, stop_ids=stop)).tokens
    got = speculative_generate(
      params, config, drafter, dparams, prompts, SpecConfig(20, stop_ids=stop)
    )
    assert got.tokens == plain, (kind, batch)


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_output_distribution_is_the_target_distribution(kind):
  """First 3 tokens of 20,000 requests (random verification lengths) vs exact enumeration."""
  vocab = 6
  config, params = tiny_model("llama", scale=3.0, vocab_size=vocab)
  # A peaky drafter (scaled-up random weights) so that rejections, residual resampling and
  # bonus tokens all occur often.
  drafter, dparams = random_drafter(kind, config, params, seed=3, mask_token_id=5, **SMALL)
  sampling = SamplingParams(0.8, top_k=5)
  prompt = [1, 2, 3, 1]
  exact = exact_sequence_probs(config, params, prompt, 3, sampling)
  n = 20_000
  verify_len = np.random.default_rng(1).integers(0, drafter.draft_len + 1, n)
  out = sampled_requests(
    params, config, drafter, dparams, prompt, sampling, n, verify_len=verify_len
  )
  samples = [tuple(t) for t in out.tokens]
  stat, dof = chi_square(samples, exact)
  assert stat < chi2_quantile_1e3(dof), (kind, stat, dof)
  assert out.accepted.sum() > 0.1 * out.admitted.sum()  # drafts were really accepted
  assert out.accepted.sum() < out.admitted.sum()  # and really rejected
