"""Sizes refused before anything is allocated: the context length and the memory left."""

import time

import numpy as np
import pytest

from dspark_jax.decoding.budget import BudgetError, available_bytes, decode_bytes
from dspark_jax.decoding.generate import GenerateConfig, generate
from dspark_jax.decoding.loop import SpecConfig, speculative_generate
from dspark_jax.drafters.ngram import NgramDrafter
from dspark_jax.models.kv_cache import KVCache
from tests.tiny import TINY_VOCAB, tiny_model
from tests.tiny_drafters import random_drafter


def test_bytes_needed_is_what_create_allocates():
  config, _ = tiny_model("qwen3", num_layers=3)
  cache = KVCache.create(config, batch=2, capacity=40)
  allocated = sum(x.nbytes for x in (*cache.keys, *cache.values))
  assert KVCache.bytes_needed(config, 2, 40) == allocated


@pytest.mark.parametrize("prompt_len,budget", [(60, 10), (70, 1)])
def test_prompt_plus_budget_beyond_the_context_is_refused(prompt_len, budget):
  config, params = tiny_model("llama", context_length=64)
  prompt = [[1] * prompt_len]
  with pytest.raises(BudgetError, match=r"exceeds the model's context length \(64\)"):
    generate(params, config, prompt, GenerateConfig(budget))
  with pytest.raises(BudgetError, match="context length"):
    speculative_generate(
      params, config, NgramDrafter(2, TINY_VOCAB), None, prompt, SpecConfig(budget)
    )


def test_a_budget_within_the_context_runs():
  config, params = tiny_model("llama", context_length=64)
  out = generate(params, config, [[1] * 54], GenerateConfig(10))
  assert len(out.tokens[0]) == 10


def test_a_cache_larger_than_the_free_memory_is_refused_before_it_is_allocated():
  """No context length to stop it: the real free memory of this machine does."""
  config, params = tiny_model("llama")
  free = available_bytes()
  assert free is not None and free > 0
  # Enough slots that the KV cache alone is about twice the free memory.
  per_slot = KVCache.bytes_needed(config, 1, 1)
  budget = int(2 * free // per_slot)
  start = time.perf_counter()
  with pytest.raises(BudgetError, match=r"needs about .* GiB .* but only .* GiB is available"):
    generate(params, config, [[1, 2, 3]], GenerateConfig(budget))
  drafter, dparams = random_drafter("dspark-markov", *tiny_model("qwen3", num_layers=3))
  target, tparams = tiny_model("qwen3", num_layers=3)
  with pytest.raises(BudgetError, match="available"):
    speculative_generate(tparams, target, drafter, dparams, [[1, 2, 3]], SpecConfig(budget))
  assert time.perf_counter() - start < 30  # refused, not swapped to death


def test_decode_bytes_counts_the_prefill_scores():
  config, _ = tiny_model("llama")
  kv, scores = decode_bytes(config, batch=2, capacity=128, prompt_width=32)
  assert kv == KVCache.bytes_needed(config, 2, 128)
  assert scores == 2 * 2 * config.num_heads * 32 * 128 * np.float32().itemsize
