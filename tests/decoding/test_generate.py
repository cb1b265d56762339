"""The jitted generation loop against a plain re-computing loop, and its per-row behaviour."""

import jax.numpy as jnp
import numpy as np
import pytest

from dspark_jax.decoding.generate import GenerateConfig, generate
from dspark_jax.decoding.sampling import SamplingParams
from dspark_jax.models.transformer import forward_jit
from tests.tiny import TINY_VOCAB, tiny_model

PROMPTS = [[5, 9, 2, 33, 7, 1, 60], [11, 4], [8, 8, 8, 20, 3]]


def naive_greedy(params, config, prompt, n):
  """Recomputes the full causal forward for every token: no cache, no batching.

  The sequence sits in a fixed 32-wide buffer (one compile); what follows position t cannot
  change a causal model's logits at t.
  """
  seq = list(prompt)
  for _ in range(n):
    tokens = jnp.asarray([seq + [0] * (32 - len(seq))])
    logits = forward_jit(params, tokens, jnp.arange(32)[None], config=config).logits
    seq.append(int(jnp.argmax(logits[0, len(seq) - 1])))
  return seq[len(prompt) :]


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_greedy_batch_equals_naive_loop(family):
  config, params = tiny_model(family, scale=5.0)
  got = generate(params, config, PROMPTS, GenerateConfig(max_new_tokens=12)).tokens
  for prompt, tokens in zip(PROMPTS, got, strict=True):
    assert tokens == naive_greedy(params, config, prompt, 12)


def test_sampled_rows_do_not_depend_on_batch_mates():
  config, params = tiny_model("qwen3", scale=3.0)
  gen = GenerateConfig(max_new_tokens=10, sampling=SamplingParams(1.0, top_k=30, top_p=0.95))
  batched = generate(params, config, PROMPTS, gen, seed=5, request_ids=[10, 11, 12]).tokens
  reordered = generate(params, config, PROMPTS[::-1], gen, seed=5, request_ids=[12, 11, 10]).tokens[
    ::-1
  ]
  alone = [
    generate(params, config, [p], gen, seed=5, request_ids=[r]).tokens[0]
    for p, r in zip(PROMPTS, [10, 11, 12], strict=True)
  ]
  assert batched == reordered == alone
  other_seed = generate(params, config, PROMPTS, gen, seed=6, request_ids=[10, 11, 12]).tokens
  assert other_seed != batched


def test_stop_token_ends_only_its_row():
  config, params = tiny_model("llama", scale=5.0)
  free = generate(params, config, PROMPTS, GenerateConfig(max_new_tokens=12)).tokens
  stop = free[0][3]
  stopped = generate(params, config, PROMPTS, GenerateConfig(12, stop_ids=(stop,))).tokens
  for full, cut in zip(free, stopped, strict=True):
    end = full.index(stop) + 1 if stop in full else len(full)
    assert cut == full[:end]
  assert len(stopped[0]) <= 4


def test_chunked_calls_equal_one_call_and_report_progress():
  config, params = tiny_model("llama", scale=5.0)
  gen = GenerateConfig(max_new_tokens=11, sampling=SamplingParams(1.0))

  class Counter:
    total = 0

    def update(self, n):
      self.total += n

  counter = Counter()
  one = generate(params, config, PROMPTS, gen, seed=1)
  chunked = generate(params, config, PROMPTS, gen, seed=1, steps_per_call=3, progress=counter)
  assert one.tokens == chunked.tokens
  assert chunked.decode_steps == 10
  assert counter.total == chunked.num_tokens - len(PROMPTS)  # tokens after the prefill's


def test_full_cache_stops_the_row():
  config, params = tiny_model("llama", scale=5.0)
  got = generate(params, config, PROMPTS, GenerateConfig(max_new_tokens=20), cache_capacity=9)
  # A row can feed tokens until its cache holds 9; the last sampled token needs no slot.
  assert [len(t) for t in got.tokens] == [9 - len(p) + 1 for p in PROMPTS]
  assert got.tokens[0] == generate(params, config, PROMPTS[:1], GenerateConfig(3)).tokens[0]


def test_prompt_longer_than_cache_is_an_error():
  config, params = tiny_model("llama")
  with pytest.raises(ValueError, match="longer than the KV cache"):
    generate(params, config, [list(range(10))], GenerateConfig(4), cache_capacity=8)


def test_empty_prompt_is_an_error():
  config, params = tiny_model("llama")
  with pytest.raises(ValueError, match="prompt 1 is empty"):
    generate(params, config, [[1, 2], []], GenerateConfig(4))


def test_tokens_stay_in_vocabulary():
  config, params = tiny_model("gemma3")
  gen = GenerateConfig(max_new_tokens=8, sampling=SamplingParams(1.5))
  tokens = np.concatenate([np.asarray(t) for t in generate(params, config, PROMPTS, gen).tokens])
  assert tokens.min() >= 0 and tokens.max() < TINY_VOCAB


def test_prompts_in_one_size_bucket_share_compiled_programs():
  """Different prompt lengths in the same buckets reuse the compiled prefill and decode loop."""
  from dspark_jax.decoding import generate as gen_module

  config, params = tiny_model("llama")
  gen = GenerateConfig(max_new_tokens=5)
  generate(params, config, [[1, 2, 3]], gen)
  compiled = len(gen_module._COMPILED)
  first = generate(params, config, [[4, 5, 6, 7, 8, 9]], gen)
  second = generate(params, config, [[7] * 11], gen)
  assert len(gen_module._COMPILED) == compiled
  assert first.compile_seconds == second.compile_seconds == 0.0
