"""Parity of the JAX target family with HF transformers on tiny random models (float32)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from dspark_jax.io.hf import load_hf_folder
from dspark_jax.models.transformer import forward_jit as forward
from tests.hf_tiny import VOCAB, make_tiny_hf_model


@pytest.mark.parametrize("family", ["llama", "qwen3", "gemma3"])
def test_logits_match_transformers(family, tmp_path):
  hf_model = make_tiny_hf_model(family, tmp_path)
  config, params = load_hf_folder(tmp_path)
  assert config.family == family
  tokens = np.random.default_rng(0).integers(0, VOCAB, size=(2, 13))
  with torch.no_grad():
    want = hf_model(torch.tensor(tokens)).logits.numpy()
  positions = np.broadcast_to(np.arange(tokens.shape[1]), tokens.shape)
  out = forward(params, jnp.asarray(tokens), jnp.asarray(positions), config=config)
  np.testing.assert_allclose(np.asarray(out.logits), want, atol=1e-4, rtol=0)


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_feature_layers_are_hf_hidden_states(family, tmp_path):
  """Layer i's raw output is HF's hidden_states[i + 1]; id -1 is the embedding output."""
  hf_model = make_tiny_hf_model(family, tmp_path, seed=1)
  config, params = load_hf_folder(tmp_path)
  tokens = np.random.default_rng(1).integers(0, VOCAB, size=(1, 9))
  with torch.no_grad():
    hidden = hf_model(torch.tensor(tokens), output_hidden_states=True).hidden_states
  positions = np.arange(9)[None]
  out = forward(
    params, jnp.asarray(tokens), jnp.asarray(positions), config=config, feature_layers=(-1, 0, 1)
  )
  want = np.concatenate([hidden[0], hidden[1], hidden[2]], axis=-1)
  np.testing.assert_allclose(np.asarray(out.features), want, atol=1e-4, rtol=0)


def test_sharded_checkpoint_folder_loads_the_same(tmp_path):
  """A checkpoint split over several safetensors files with an index loads like one file."""
  hf_model = make_tiny_hf_model("qwen3", tmp_path / "one", seed=2)
  hf_model.save_pretrained(tmp_path / "many", max_shard_size="40KB")
  assert (tmp_path / "many" / "model.safetensors.index.json").is_file()
  assert len(list((tmp_path / "many").glob("*.safetensors"))) > 1
  _, one = load_hf_folder(tmp_path / "one")
  _, many = load_hf_folder(tmp_path / "many")
  for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(many), strict=True):
    np.testing.assert_array_equal(a, b)
