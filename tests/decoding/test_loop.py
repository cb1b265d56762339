"""The speculative loop: greedy identity, exact output distribution, batch invariance, errors."""

import itertools

import numpy as np
import pytest

from dspark_jax.decoding import generate as gen_module
from dspark_jax.decoding import loop as loop_module
from dspark_jax.decoding.generate import GenerateConfig, generate
from dspark_jax.decoding.loop import SpecConfig, speculative_generate
from dspark_jax.decoding.sampling import SamplingParams
from dspark_jax.decoding.verify import verify
from dspark_jax.drafters.draft_model import DraftModelDrafter
from dspark_jax.drafters.ngram import NgramDrafter
from tests.distribution import chi2_quantile_1e3, chi_square, exact_sequence_probs, tight_cache
from tests.tiny import TINY_VOCAB, tiny_model

PROMPTS = [[5, 9, 2, 33, 7, 1, 60, 5, 9, 2], [11, 4], [8, 8, 8, 20, 3, 8, 8], [1, 2, 3, 1, 2]]


def drafters(target_config, target_params, vocab=TINY_VOCAB):
  """(name, drafter, params): n-gram, a different small random model, the target itself."""
  small_config, small_params = tiny_model(
    "llama", seed=7, scale=4.0, num_layers=1, vocab_size=vocab
  )
  return [
    ("ngram", NgramDrafter(4, vocab, min_ngram=1), None),  # 1-grams: proposes often
    ("draft-model", DraftModelDrafter(small_config, 3), small_params),
    ("self", DraftModelDrafter(target_config, 5), target_params),
  ]


# Batch 1 in the extended tier: a batch of 4 covers its paths, rows of different lengths included.
@pytest.mark.parametrize("batch", [pytest.param(1, marks=pytest.mark.extended), 4])
@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_greedy_speculative_equals_plain_greedy(family, batch):
  config, params = tiny_model(family, scale=5.0)
  prompts = PROMPTS[:batch]
  stop = (7,)
  plain = generate(params, config, prompts, GenerateConfig(24, stop_ids=stop)).tokens
  for name, drafter, dparams in drafters(config, params):
    got = speculative_generate(
      params, config, drafter, dparams, prompts, SpecConfig(24, stop_ids=stop)
    )
    assert got.tokens == plain, name
    if name == "self":  # a perfect drafter: every admitted slot is accepted
      np.testing.assert_array_equal(got.accepted, got.admitted)


def test_zero_verification_length_is_plain_decoding():
  config, params = tiny_model("qwen3", scale=5.0)
  drafter = DraftModelDrafter(*tiny_model("qwen3", seed=3, num_layers=1)[:1], draft_len=4)
  plain = generate(params, config, PROMPTS, GenerateConfig(12)).tokens
  got = speculative_generate(
    params,
    config,
    drafter,
    tiny_model("qwen3", seed=3, num_layers=1)[1],
    PROMPTS,
    SpecConfig(12),
    verify_len=[0, 0, 0, 0],
  )
  assert got.tokens == plain
  assert got.admitted.sum() == 0 and got.mean_accepted_length == 1.0


VOCAB = 6
N_SAMPLES = 20000
SAMPLINGS = [SamplingParams(1.0), SamplingParams(0.7, top_k=4)]


def sampled_sequences(config, params, drafter, dparams, prompt, sampling, vary, pad_id=0):
  rng = np.random.default_rng(1)
  verify_len = rng.integers(0, drafter.draft_len + 1, N_SAMPLES) if vary else None
  out = speculative_generate(
    params,
    config,
    drafter,
    dparams,
    [prompt] * N_SAMPLES,
    SpecConfig(3, sampling, pad_id=pad_id),
    seed=4,
    verify_len=verify_len,
    cache_capacity=tight_cache([prompt], 3, drafter),
  )
  return [tuple(t) for t in out.tokens]


@pytest.mark.slow
# Warped sampling (temperature, top-k/top-p) is distribution-tested in the default suite by the
# drafter, scheduler, prefix, draft-vocabulary and row-sampling tests; here it is extended.
@pytest.mark.parametrize(
  "sampling",
  [SAMPLINGS[0], pytest.param(SAMPLINGS[1], marks=pytest.mark.extended)],
  ids=["T1", "T0.7-top4"],
)
def test_output_distribution_is_the_target_distribution(sampling):
  """First 3 tokens of 20,000 independent requests vs the exact enumerated distribution.

  One call runs all 20,000 requests as one batch; randomness is keyed per request, so each row
  is an independent sample (and equal to what the request gives alone or in a batch of 8, see
  `test_sampled_request_is_identical_alone_and_in_a_batch`).
  """
  config, params = tiny_model("llama", scale=3.0, vocab_size=VOCAB)
  prompt = [1, 2, 3, 1]
  exact = exact_sequence_probs(config, params, prompt, 3, sampling)
  for (name, drafter, dparams), vary in itertools.product(
    drafters(config, params, VOCAB)[:2], [False, True]
  ):
    samples = sampled_sequences(config, params, drafter, dparams, prompt, sampling, vary)
    stat, dof = chi_square(samples, exact)
    assert stat < chi2_quantile_1e3(dof), (name, vary, stat, dof)


def always_accept(target_logits, drafts, draft_logits, lengths, sampling, seed, req, pos):
  _, next_token = verify(target_logits, drafts, draft_logits, lengths, sampling, seed, req, pos)
  return lengths, next_token


@pytest.mark.slow
def test_the_distribution_test_fails_an_always_accept_verifier(monkeypatch):
  config, params = tiny_model("llama", scale=3.0, vocab_size=VOCAB)
  prompt = [1, 2, 3, 1]
  sampling = SAMPLINGS[0]
  exact = exact_sequence_probs(config, params, prompt, 3, sampling)
  monkeypatch.setattr(loop_module, "verify", always_accept)
  _, drafter, dparams = drafters(config, params, VOCAB)[1]
  # pad_id=5 makes a distinct static config, so the loop is traced anew with the wrong verifier.
  samples = sampled_sequences(config, params, drafter, dparams, prompt, sampling, False, pad_id=5)
  stat, dof = chi_square(samples, exact)
  assert stat > chi2_quantile_1e3(dof)


def test_sampled_request_is_identical_alone_and_in_a_batch():
  config, params = tiny_model("gemma3", scale=3.0)
  spec = SpecConfig(16, SamplingParams(1.0, top_p=0.9))
  prompts = (PROMPTS * 2)[:8]
  # The n-gram drafter and an independent draft model: the two ways a proposal is made here.
  for name, drafter, dparams in drafters(config, params)[:2]:
    batch = speculative_generate(
      params, config, drafter, dparams, prompts, spec, seed=9, request_ids=range(100, 108)
    ).tokens
    for row in (0, 5):
      alone = speculative_generate(
        params, config, drafter, dparams, [prompts[row]], spec, seed=9, request_ids=[100 + row]
      ).tokens[0]
      assert alone == batch[row], name


def test_the_loop_compiles_once_per_shape():
  config, params = tiny_model("llama", scale=3.0)
  drafter = NgramDrafter(3, TINY_VOCAB)
  spec = SpecConfig(6, SamplingParams(1.0))
  speculative_generate(params, config, drafter, None, [[1, 2, 3]], spec)
  count = len(gen_module._COMPILED)
  second = speculative_generate(params, config, drafter, None, [[4, 5, 6, 7, 8]], spec, seed=3)
  assert len(gen_module._COMPILED) == count and second.compile_seconds == 0.0


def test_bad_input_errors():
  config, params = tiny_model("llama")
  with pytest.raises(ValueError, match="vocabulary"):
    speculative_generate(
      params, config, NgramDrafter(3, TINY_VOCAB + 1), None, [[1]], SpecConfig(4)
    )
  with pytest.raises(ValueError, match="draft_len"):
    NgramDrafter(0, TINY_VOCAB)
  with pytest.raises(ValueError, match="draft_len"):
    DraftModelDrafter(config, 0)
  with pytest.raises(ValueError, match="needs 20 cache slots; the cache has 16"):
    speculative_generate(
      params,
      config,
      NgramDrafter(3, TINY_VOCAB),
      None,
      [[1] * 4],
      SpecConfig(12),
      cache_capacity=16,
    )
  with pytest.raises(ValueError, match="verify_len"):
    speculative_generate(
      params, config, NgramDrafter(3, TINY_VOCAB), None, [[1]], SpecConfig(4), verify_len=[4]
    )
