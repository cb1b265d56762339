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
  elif family == "deepseek_v3":
    # MLA (low-rank queries, interleaved rotary dims) and group-limited sigmoid routing with a
    # shared expert; every head has its own key/value (num_key_value_heads = heads).
    cfg = tf.DeepseekV3Config(
      **{**common, "num_key_value_heads": 4, "head_dim": 8},
      tie_word_embeddings=False,
      rope_theta=5000.0,
      q_lora_rank=24,
      kv_lora_rank=16,
      qk_rope_head_dim=8,
      qk_nope_head_dim=12,
      v_head_dim=10,
      n_routed_experts=8,
      n_group=2,
      topk_group=1,
      num_experts_per_tok=2,
      n_shared_experts=1,
      moe_intermediate_size=16,
      first_k_dense_replace=1,
      routed_scaling_factor=2.5,
      rope_interleave=True,
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
    "deepseek_v3": tf.DeepseekV3ForCausalLM,
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
    for name, b in model.named_buffers():
      if name.endswith("e_score_correction_bias"):  # DeepSeek-V3's router bias: not zero
        b.copy_(0.1 * torch.randn_like(b))
  model.save_pretrained(folder, safe_serialization=True)
  return model
