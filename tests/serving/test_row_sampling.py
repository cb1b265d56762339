"""Per-row sampling through the speculative loop (the serving engine's slots): the output
distribution of every row is its own filtered target distribution, whatever its neighbours ask.

The engine's other paths (insertion, streaming) are checked by identity with the reference
loop in test_engine.py, so this test carries the engine's losslessness for sampled requests."""

import numpy as np
import pytest

from dspark_jax.decoding import loop, sampling
from dspark_jax.decoding.loop import SpecConfig
from dspark_jax.decoding.sampling import RowSampling, SamplingParams
from dspark_jax.models.kv_cache import KVCache
from tests.decoding.test_loop import VOCAB, drafters
from tests.distribution import chi2_quantile_1e3, chi_square, exact_sequence_probs
from tests.tiny import tiny_model

N_PER_SETTING = 10000
SETTINGS = [SamplingParams(1.0), SamplingParams(0.7, top_k=4)]
PROMPT = [1, 2, 3, 1]


def mixed_row_samples(pad_id=0):
  """First 3 tokens of N_PER_SETTING rows per setting, the settings interleaved row by row in
  one batch, every row its own seed; verification lengths vary per row."""
  config, params = tiny_model("llama", scale=3.0, vocab_size=VOCAB)
  _, drafter, dparams = drafters(config, params, VOCAB)[1]  # an independent draft model
  n = N_PER_SETTING * len(SETTINGS)
  rows = RowSampling.of([SETTINGS[i % len(SETTINGS)] for i in range(n)])
  spec = SpecConfig(3, pad_id=pad_id)
  static = dict(target_config=config, drafter=drafter, spec=spec)
  verify_len = np.random.default_rng(1).integers(0, drafter.draft_len + 1, n).astype(np.int32)
  state = loop._prefill_jit(
    params,
    dparams,
    np.asarray([PROMPT] * n, np.int32),
    np.full(n, len(PROMPT), np.int32),
    KVCache.create(config, n, 16),
    np.zeros(n, np.int32),
    np.arange(n, dtype=np.uint32),
    verify_len,
    **static,
    sampling=rows,
    max_tokens_B=np.full(n, 3, np.int32),
  )
  state = loop._decode_jit(params, dparams, state, np.int32(3), **static)
  tokens = np.asarray(state.tokens)
  return (
    config,
    params,
    [[tuple(t) for t in tokens[i :: len(SETTINGS)]] for i in range(len(SETTINGS))],
  )


@pytest.mark.slow
def test_each_row_follows_its_own_target_distribution():
  config, params, samples = mixed_row_samples()
  for setting, got in zip(SETTINGS, samples, strict=True):
    exact = exact_sequence_probs(config, params, PROMPT, 3, setting)
    stat, dof = chi_square(got, exact)
    assert stat < chi2_quantile_1e3(dof), (setting, stat, dof)


@pytest.mark.slow
def test_the_distribution_test_fails_rows_that_drop_their_top_k(monkeypatch):
  """A deliberately wrong per-row filter (top-k ignored) must fail the test above."""
  right = sampling._filter_rows

  def no_top_k(logits, rows):
    return right(logits, rows.replace(top_k=0 * rows.top_k))

  monkeypatch.setattr(sampling, "_filter_rows", no_top_k)
  config, params, samples = mixed_row_samples(pad_id=5)  # a new static config: traced anew
  exact = exact_sequence_probs(config, params, PROMPT, 3, SETTINGS[1])
  stat, dof = chi_square(samples[1], exact)
  assert stat > chi2_quantile_1e3(dof)
