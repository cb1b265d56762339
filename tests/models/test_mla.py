"""Multi-head latent attention (DeepSeek-V3): a DeepseekV3ForCausalLM folder against
transformers (which computes the expanded per-head form), the compressed cache's decode against
the cache-free forward, the cache's size, and speculative decoding on an MLA + MoE target
(greedy identity, output distribution)."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from dspark_jax.config import MLAConfig
from dspark_jax.decoding.generate import GenerateConfig, generate
from dspark_jax.decoding.loop import SpecConfig, speculative_generate
from dspark_jax.decoding.sampling import SamplingParams
from dspark_jax.io.hf import load_hf_folder, params_from_hf_tensors, tensor_getter
from dspark_jax.models.kv_cache import KVCache
from dspark_jax.models.transformer import forward_jit as forward
from tests.decoding.test_loop import PROMPTS, drafters
from tests.distribution import chi2_quantile_1e3, chi_square, exact_sequence_probs, sampled_requests
from tests.hf_tiny import VOCAB, make_tiny_hf_model
from tests.tiny import deepseek_style_moe, tiny_model
from tests.tiny_drafters import random_drafter

TINY_MLA = MLAConfig(kv_lora_rank=12, qk_nope_head_dim=6, qk_rope_head_dim=8, v_head_dim=5)
TINY_DEEPSEEK_MOE = deepseek_style_moe()


def _logits(params, config, tokens):
  positions = np.broadcast_to(np.arange(tokens.shape[1]), tokens.shape)
  return np.asarray(
    forward(params, jnp.asarray(tokens), jnp.asarray(positions), config=config).logits
  )


@pytest.mark.parametrize("q_lora_rank", [24, None])
def test_deepseek_v3_logits_match_transformers(tmp_path, q_lora_rank):
  hf_model = make_tiny_hf_model("deepseek_v3", tmp_path, q_lora_rank=q_lora_rank)
  config, params = load_hf_folder(tmp_path)
  assert config.mla.q_lora_rank == q_lora_rank and config.moe.router == "sigmoid"
  assert config.moe.dense_layers == (0,) and config.moe.num_shared_experts == 1
  tokens = np.random.default_rng(0).integers(0, VOCAB, size=(2, 13))
  with torch.no_grad():
    want = hf_model(torch.tensor(tokens)).logits.numpy()
  np.testing.assert_allclose(_logits(params, config, tokens), want, atol=1e-4, rtol=0)

  # The test can fail: ignoring the checkpoint's interleaved rotary layout changes the logits.
  plain = params_from_hf_tensors(config, tensor_getter(tmp_path), rope_interleaved=False)
  assert np.abs(_logits(plain, config, tokens) - want).max() > 1e-3


def test_deepseek_v3_greedy_generation_matches_transformers(tmp_path):
  """HF generates through its own cache; ours through the compressed (latent) cache."""
  hf_model = make_tiny_hf_model("deepseek_v3", tmp_path, seed=1)
  config, params = load_hf_folder(tmp_path)
  prompt = [5, 17, 3, 40, 2]
  with torch.no_grad():
    hf = hf_model.generate(
      torch.tensor([prompt]), max_new_tokens=12, do_sample=False, eos_token_id=None, pad_token_id=0
    )[0, len(prompt) :].tolist()
  assert generate(params, config, [prompt], GenerateConfig(12)).tokens[0] == hf


@pytest.mark.parametrize("write", [True, False])
def test_latent_cache_decode_equals_the_cache_free_forward(write):
  """Prefill 5 tokens, then 3 + 1 more through the cache (writing, or attending without writing
  and writing after): each step's logits equal the cache-free forward over the whole prefix."""
  config, params = tiny_model("llama", num_layers=2, mla=TINY_MLA, moe=TINY_DEEPSEEK_MOE)
  rng = np.random.default_rng(3)
  tokens = rng.integers(0, config.vocab_size, size=(2, 9))
  full = _logits(params, config, tokens)
  cache = KVCache.create(config, 2, 16)
  assert cache.keys[0].shape == (2, 1, 16, 12) and cache.values[0].shape == (2, 1, 16, 8)
  start = 0
  for size in (5, 3, 1):
    chunk = tokens[:, start : start + size]
    positions = jnp.asarray(np.broadcast_to(np.arange(start, start + size), chunk.shape))
    out = forward(params, jnp.asarray(chunk), positions, cache, config=config, write_cache=write)
    cache = out.cache if write else out.cache.write_entries(out.new_entries)
    np.testing.assert_allclose(np.asarray(out.logits), full[:, start : start + size], atol=1e-5)
    start += size
  assert np.asarray(cache.lengths).tolist() == [9, 9]


def test_latent_cache_size():
  """The cache holds (latent + rotary key) per token and layer, whatever the head count."""
  config, _ = tiny_model("llama", num_layers=2, mla=TINY_MLA)
  cache = KVCache.create(config, 3, 32, "bfloat16")
  allocated = sum(x.nbytes for x in (*cache.keys, *cache.values))
  assert allocated == KVCache.bytes_needed(config, 3, 32, "bfloat16")
  assert allocated == 3 * 32 * KVCache.bytes_per_token(config)
  assert KVCache.bytes_per_token(config) == 2 * 2 * (12 + 8)
  gqa = dataclasses.replace(config, mla=None)  # same heads as grouped-query attention
  assert KVCache.bytes_per_token(gqa) == 2 * 2 * 2 * config.num_kv_heads * config.head_dim


def test_speculative_decoding_on_an_mla_target_is_greedy_identical():
  config, params = tiny_model("llama", scale=4.0, num_layers=3, mla=TINY_MLA, moe=TINY_DEEPSEEK_MOE)
  plain = generate(params, config, PROMPTS, GenerateConfig(20, stop_ids=(7,))).tokens
  dspark, dparams = random_drafter("dspark-markov", config, params)
  # n-gram and DSpark here; the draft-model and self drafters are checked on dense targets.
  ngram = [d for d in drafters(config, params) if d[0] == "ngram"]
  for name, drafter, dp in [*ngram, ("dspark", dspark, dparams)]:
    got = speculative_generate(params, config, drafter, dp, PROMPTS, SpecConfig(20, stop_ids=(7,)))
    assert got.tokens == plain, name


@pytest.mark.slow
def test_speculative_output_on_an_mla_target_follows_its_distribution():
  """A DeepSeek-style target (MLA + sigmoid-routed experts) under a random DSpark drafter:
  the first 3 tokens of 20,000 requests against the exact enumeration."""
  config, params = tiny_model(
    "llama", scale=3.0, vocab_size=6, num_layers=3, mla=TINY_MLA, moe=TINY_DEEPSEEK_MOE
  )
  prompt, sampling = [1, 2, 3, 1], SamplingParams(1.0)
  exact = exact_sequence_probs(config, params, prompt, 3, sampling)
  drafter, dparams = random_drafter(
    "dspark-markov", config, params, mask_token_id=5, block_size=3, num_layers=1
  )
  out = sampled_requests(params, config, drafter, dparams, prompt, sampling)
  stat, dof = chi_square([tuple(t) for t in out.tokens], exact)
  assert stat < chi2_quantile_1e3(dof), (stat, dof)
  assert out.accepted.sum() > 0  # the drafter's tokens were taken, not only resampled
