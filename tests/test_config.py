"""Configs: validation and key=value overrides."""

import pytest

from dspark_jax.config import ModelConfig, gemma3_layer_windows, override
from tests.tiny import tiny_config


def test_override_parses_by_field_type():
  config = override(
    tiny_config(),
    ["num_layers=3", "rope_theta=5e4", "tie_embeddings=false", "final_logit_softcap=none"],
  )
  assert (config.num_layers, config.rope_theta, config.tie_embeddings) == (3, 5e4, False)
  assert config.final_logit_softcap is None


def test_override_rejects_unknown_keys_and_bad_values():
  with pytest.raises(ValueError, match="unknown config key 'layers'"):
    override(tiny_config(), ["layers=3"])
  with pytest.raises(ValueError, match="key=value"):
    override(tiny_config(), ["num_layers"])
  with pytest.raises(ValueError):
    override(tiny_config(), ["num_layers=three"])


def test_model_config_validation():
  with pytest.raises(ValueError, match="unsupported model family 'gpt2'"):
    tiny_config(family="gpt2")
  with pytest.raises(ValueError, match="multiple of num_kv_heads"):
    tiny_config(num_heads=5, num_kv_heads=2)
  with pytest.raises(ValueError, match="layer_windows has 1 entries for 2 layers"):
    ModelConfig("gemma3", 8, 8, 8, 2, 2, 1, 4, layer_windows=(3,))


def test_gemma3_window_pattern():
  assert gemma3_layer_windows(7, 512) == (512, 512, 512, 512, 512, None, 512)
