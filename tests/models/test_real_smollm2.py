"""The bundled SmolLM2-135M-Instruct GGUF against HF transformers loading the same file."""

import jax
import numpy as np
import pytest
import torch

from dspark_jax.decoding.generate import GenerateConfig, generate
from dspark_jax.io.load import load_model
from dspark_jax.models.transformer import forward_jit

pytestmark = [pytest.mark.real_model, pytest.mark.slow]

PROMPTS = [
  "Explain how a refrigerator keeps food cold.",
  "Write a short story about a dragon who learns to bake bread.",
  "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in "
  "May. How many clips did Natalia sell altogether in April and May?",
]


@pytest.fixture(scope="module")
def models():
  import transformers as tf

  ours = load_model("smollm2-135m")
  path = ours.source
  hf_tok = tf.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
  hf = tf.AutoModelForCausalLM.from_pretrained(
    str(path.parent), gguf_file=path.name, dtype=torch.float32
  ).eval()
  return ours, hf_tok, hf


def _chat_ids(tokenizer, text):
  return tokenizer.encode_chat([{"role": "user", "content": text}])


def test_prompt_ids_match_transformers(models):
  ours, hf_tok, _ = models
  for text in PROMPTS:
    want = hf_tok.apply_chat_template(
      [{"role": "user", "content": text}], tokenize=True, add_generation_prompt=True
    )
    want = want["input_ids"] if isinstance(want, dict) or hasattr(want, "keys") else want
    assert _chat_ids(ours.tokenizer, text) == list(want)


def test_last_token_logits_match_transformers(models):
  ours, _, hf = models
  params = jax.device_put(ours.params)
  for text in PROMPTS:
    ids = _chat_ids(ours.tokenizer, text)
    with torch.no_grad():
      want = hf(torch.tensor([ids])).logits[0, -1].numpy()
    got = forward_jit(params, np.asarray([ids]), np.arange(len(ids))[None], config=ours.config)
    got = np.asarray(got.logits[0, -1])
    rel = np.abs(got - want).max() / np.abs(want).max()
    assert rel <= 1e-3, rel


def test_64_greedy_tokens_match_transformers(models):
  """Both stop at the model's EOS (<|im_end|>, id 2); these prompts need all 64 tokens.

  (HF's generate with its EOS switched off takes a different path and is not plain greedy.)
  """
  ours, _, hf = models
  prompts = [
    _chat_ids(ours.tokenizer, text) for text in [*PROMPTS, "What is the capital of France?"]
  ]
  # One batch of prompts of different lengths: exercises padding and per-row caches too.
  gen = GenerateConfig(64, stop_ids=(hf.generation_config.eos_token_id,))
  got = generate(jax.device_put(ours.params), ours.config, prompts, gen).tokens
  for ids, tokens in zip(prompts, got, strict=True):
    with torch.no_grad():
      want = hf.generate(torch.tensor([ids]), max_new_tokens=64, do_sample=False)[0, len(ids) :]
    assert tokens == want.tolist()
  assert [len(t) for t in got[:3]] == [64, 64, 64]
  assert "Paris" in ours.tokenizer.decode(got[3])
