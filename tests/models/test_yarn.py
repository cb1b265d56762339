"""YaRN RoPE scaling against transformers: the blended frequencies, then whole models (Qwen3,
and DeepSeek-V3 with its extra softmax scale) from HF folders and from a deepseek2 GGUF."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from dspark_jax.io.gguf import load_gguf
from dspark_jax.io.hf import _rope_scaling, load_hf_folder
from dspark_jax.models.transformer import forward_jit
from tests.hf_tiny import VOCAB, make_tiny_hf_model
from tests.io.gguf_tiny import write_gguf

# Positions well past the original context, where interpolated and plain frequencies differ.
START, LENGTH = 150, 12


@pytest.mark.parametrize(
  "rope",
  [
    dict(factor=4.0, original_max_position_embeddings=64),
    dict(factor=40.0, original_max_position_embeddings=4096, mscale=1.0, mscale_all_dim=1.0),
    dict(factor=8.0, original_max_position_embeddings=128, mscale=0.7, mscale_all_dim=0.3),
    dict(factor=2.0, original_max_position_embeddings=32, beta_fast=16, beta_slow=2),
    dict(factor=4.0, original_max_position_embeddings=64, truncate=False),
    dict(factor=None, original_max_position_embeddings=64, attention_factor=1.3),  # from lengths
  ],
)
@pytest.mark.parametrize("head_dim", [8, 64])
def test_frequencies_and_magnitude_equal_transformers(rope, head_dim):
  import transformers as tf
  from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

  params = {"rope_type": "yarn", "rope_theta": 10000.0, **rope}
  cfg = tf.LlamaConfig(
    hidden_size=4 * head_dim,
    num_attention_heads=4,
    head_dim=head_dim,
    max_position_embeddings=256,
    rope_parameters=params,
  )
  want_freq, want_magnitude = ROPE_INIT_FUNCTIONS["yarn"](cfg)
  got = _rope_scaling(params, 256)
  np.testing.assert_allclose(got.inv_freq(head_dim, 10000.0), want_freq.numpy(), rtol=1e-6)
  assert got.attention_factor == pytest.approx(want_magnitude, rel=1e-9)


def _hf_logits(hf_model, tokens):
  positions = torch.arange(START, START + LENGTH)[None]
  with torch.no_grad():
    return hf_model(torch.tensor(tokens), position_ids=positions).logits.numpy()


def _logits(params, config, tokens):
  positions = jnp.arange(START, START + LENGTH)[None]
  return np.asarray(forward_jit(params, jnp.asarray(tokens), positions, config=config).logits)


DEEPSEEK_YARN = {
  "rope_type": "yarn",
  "rope_theta": 5000.0,
  "factor": 8.0,
  "original_max_position_embeddings": 32,
  "beta_fast": 32,
  "beta_slow": 1,
  "mscale": 1.0,
  "mscale_all_dim": 0.5,  # != mscale: cos/sin carry a factor and every score another
}

QWEN3_YARN = {
  "rope_type": "yarn",
  "rope_theta": 5000.0,
  "factor": 4.0,
  "original_max_position_embeddings": 32,
}


@pytest.mark.parametrize("family", ["qwen3", "deepseek_v3"])
def test_an_hf_model_with_yarn_matches_transformers(family, tmp_path):
  rope = DEEPSEEK_YARN if family == "deepseek_v3" else QWEN3_YARN
  hf_model = make_tiny_hf_model(family, tmp_path, seed=2, rope_parameters=rope)
  config, params = load_hf_folder(tmp_path)
  assert config.rope_yarn is not None and config.rope_yarn.factor == rope["factor"]
  tokens = np.random.default_rng(0).integers(0, VOCAB, size=(1, LENGTH))
  want = _hf_logits(hf_model, tokens)
  np.testing.assert_allclose(_logits(params, config, tokens), want, atol=1e-4, rtol=0)

  # The test can fail: plain RoPE in place of YaRN (and, for DeepSeek, no softmax rescale).
  plain = dataclasses.replace(config, rope_yarn=None)
  if config.mla is not None:
    assert config.mla.score_multiplier != 1.0
    plain = dataclasses.replace(plain, mla=dataclasses.replace(config.mla, score_multiplier=1.0))
  assert np.abs(_logits(params, plain, tokens) - want).max() > 1e-3


@pytest.mark.parametrize("family", ["qwen3", "deepseek_v3"])
def test_a_gguf_with_yarn_matches_transformers(family, tmp_path):
  """llama.cpp records YaRN as factor and original context; its RoPE scales cos and sin by
  mscale(factor) (transformers' default attention factor), except for deepseek2, which
  stores `yarn_log_multiplier` (0.1 x mscale_all_dim) for the score rescale and keeps the
  rotation's magnitude at 1 (DeepSeek's released configs have mscale = mscale_all_dim)."""
  rope = {**DEEPSEEK_YARN, "mscale_all_dim": 1.0} if family == "deepseek_v3" else QWEN3_YARN
  hf_model = make_tiny_hf_model(family, tmp_path / "hf", seed=4, rope_parameters=rope)
  state = {k: v.numpy() for k, v in hf_model.state_dict().items()}
  path = tmp_path / "yarn.gguf"
  arch = "deepseek2" if family == "deepseek_v3" else family
  write_gguf(path, arch, hf_model.config, state, yarn=True)
  config, params, _ = load_gguf(path)
  assert config.rope_yarn.original_context == 32
  if family == "deepseek_v3":
    assert config.mla.score_multiplier > 1.0 and config.rope_yarn.attention_factor == 1.0
  else:
    assert config.rope_yarn.attention_factor > 1.0
  tokens = np.random.default_rng(1).integers(0, VOCAB, size=(1, LENGTH))
  np.testing.assert_allclose(
    _logits(params, config, tokens), _hf_logits(hf_model, tokens), atol=1e-4, rtol=0
  )


def test_other_rope_scalings_and_bad_yarn_parameters_are_refused():
  from dspark_jax.io.hf import CheckpointError

  with pytest.raises(CheckpointError, match="'dynamic'.*supported: default, linear, yarn"):
    _rope_scaling({"rope_type": "dynamic", "factor": 2.0}, 256)
  with pytest.raises(CheckpointError, match="bad yarn RoPE parameters"):
    _rope_scaling({"rope_type": "yarn", "factor": 0.5, "original_max_position_embeddings": 64}, 256)
