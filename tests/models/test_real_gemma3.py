"""The Gemma 3 270M GGUF (Q4_K/Q5_0/Q6_K/Q8_0 tensors) against HF transformers loading it."""

import jax
import numpy as np
import pytest
import torch

from dspark_jax.decoding.generate import GenerateConfig, generate
from dspark_jax.io.load import load_model
from dspark_jax.io.model_files import ModelFileError
from dspark_jax.models.transformer import forward_jit

# Extended tier: the tiny Gemma 3 configs match transformers in the default suite
# (tests/models/test_hf_parity.py); this is the same check on the real 270M weights.
pytestmark = [pytest.mark.real_model, pytest.mark.slow, pytest.mark.extended]

# Long enough (> 512 tokens) that the sliding-window layers drop the start of the context.
LONG_TEXT = " ".join(
  f"Item {i}: the river {name} flows {i * 7 % 13} miles past the old mill."
  for i, name in enumerate(["Avon", "Severn", "Thames", "Trent", "Wye", "Tees"] * 9)
)


@pytest.fixture(scope="module")
def models():
  import transformers as tf

  try:
    ours = load_model("gemma3-270m")
  except ModelFileError as e:
    pytest.skip(str(e))
  path = ours.source
  hf = tf.AutoModelForCausalLM.from_pretrained(
    str(path.parent), gguf_file=path.name, dtype=torch.float32
  ).eval()
  return ours, hf


def test_logits_and_greedy_tokens_match_transformers(models):
  ours, hf = models
  params = jax.device_put(ours.params)
  short = ours.tokenizer.encode("The capital of France is")
  long = ours.tokenizer.encode(LONG_TEXT)
  assert short[0] == ours.tokenizer.bos_id and len(long) > 600
  for ids in (short, long):
    with torch.no_grad():
      want = hf(torch.tensor([ids])).logits[0, -1].numpy()
    got = forward_jit(params, np.asarray([ids]), np.arange(len(ids))[None], config=ours.config)
    got = np.asarray(got.logits[0, -1])
    assert np.abs(got - want).max() / np.abs(want).max() <= 1e-3

  got = generate(params, ours.config, [short], GenerateConfig(20)).tokens[0]
  with torch.no_grad():
    want = hf.generate(torch.tensor([short]), max_new_tokens=20, do_sample=False)[0, len(short) :]
  assert got == want.tolist()
  assert "France" in ours.tokenizer.decode(got) or "Paris" in ours.tokenizer.decode(got)
