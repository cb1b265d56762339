"""Tiny random HF transformers models of each target family, saved as safetensors folders."""

from __future__ import annotations

from pathlib import Path

import torch

VOCAB = 96


def tiny_hf_config(family: str, **overrides):
  import transformers as tf

  common = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=256,
    rms_norm_eps=1e-6,
  )
  if family == "llama":
    cfg = tf.LlamaConfig(**common, tie_word_embeddings=True, rope_theta=1000.0)
  elif family == "qwen3":
    cfg = tf.Qwen3Config(**common, tie_word_embeddings=False, rope_theta=5000.0)
  elif family == "qwen3_moe":
    cfg = tf.Qwen3MoeConfig(
      **common,
      tie_word_embeddings=False,
      rope_theta=5000.0,
      moe_intermediate_size=32,
      num_experts=6,
      num_experts_per_tok=2,
      decoder_sparse_step=1,
      mlp_only_layers=[0],
      norm_topk_prob=True,
    )
  elif family == "gemma3":
    cfg = tf.Gemma3TextConfig(
      **common,
      sliding_window=5,
      layer_types=["sliding_attention", "full_attention", "sliding_attention"],
      query_pre_attn_scalar=24,
      final_logit_softcapping=30.0,
      attn_logit_softcapping=None,
    )
  else:
    raise ValueError(family)
  for key, value in overrides.items():
    setattr(cfg, key, value)
  return cfg


def make_tiny_hf_model(family: str, folder: Path, seed: int = 0, **overrides):
  """Creates a random model (norm weights randomised too, so they are tested) and saves it."""
  import transformers as tf

  torch.manual_seed(seed)
  cfg = tiny_hf_config(family, **overrides)
  cls = {
    "llama": tf.LlamaForCausalLM,
    "qwen3": tf.Qwen3ForCausalLM,
    "qwen3_moe": tf.Qwen3MoeForCausalLM,
    "gemma3": tf.Gemma3ForCausalLM,
  }[family]
  model = cls(cfg).float().eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "norm" in name:
        p.copy_(
          1.0 + 0.3 * torch.randn_like(p) if family != "gemma3" else 0.3 * torch.randn_like(p)
        )
      else:
        p.copy_(0.08 * torch.randn_like(p))
  model.save_pretrained(folder, safe_serialization=True)
  return model
