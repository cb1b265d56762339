"""Writes tiny GGUF files from HF-layout tensors the way llama.cpp's converter does."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

_LAYER = {
  "self_attn.q_proj.weight": "attn_q",
  "self_attn.k_proj.weight": "attn_k",
  "self_attn.v_proj.weight": "attn_v",
  "self_attn.o_proj.weight": "attn_output",
  "self_attn.q_norm.weight": "attn_q_norm",
  "self_attn.k_norm.weight": "attn_k_norm",
  "input_layernorm.weight": "attn_norm",
  "mlp.gate_proj.weight": "ffn_gate",
  "mlp.up_proj.weight": "ffn_up",
  "mlp.down_proj.weight": "ffn_down",
  "mlp.gate.weight": "ffn_gate_inp",
  "self_attn.q_a_proj.weight": "attn_q_a",
  "self_attn.q_a_layernorm.weight": "attn_q_a_norm",
  "self_attn.q_b_proj.weight": "attn_q_b",
  "self_attn.kv_a_proj_with_mqa.weight": "attn_kv_a_mqa",
  "self_attn.kv_a_layernorm.weight": "attn_kv_a_norm",
  "self_attn.kv_b_proj.weight": "attn_kv_b",
  "mlp.shared_experts.gate_proj.weight": "ffn_gate_shexp",
  "mlp.shared_experts.up_proj.weight": "ffn_up_shexp",
  "mlp.shared_experts.down_proj.weight": "ffn_down_shexp",
}


def llama_cpp_permute(w: np.ndarray, heads: int) -> np.ndarray:
  """llama.cpp's convert_hf_to_gguf permutation of Q/K rows for interleaved RoPE."""
  rows = w.shape[0]
  return w.reshape(heads, 2, rows // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _expert_stacks(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """transformers 5's stacked experts (gate_up [E, 2I, D], down [E, D, I]) as llama.cpp's three
  stacks, under the pseudo-names `gguf_name` maps to ffn_{gate,up,down}_exps."""
  out = {}
  for name, w in state.items():
    if name.endswith("mlp.experts.gate_up_proj"):
      gate, up = np.split(np.asarray(w), 2, axis=1)
      out[name.replace("gate_up_proj", "gate_exps")] = gate
      out[name.replace("gate_up_proj", "up_exps")] = up
    elif name.endswith("mlp.experts.down_proj"):
      out[name.replace("down_proj", "down_exps")] = w
    else:
      out[name] = w
  return out


def gguf_name(hf_name: str, arch: str) -> str:
  if hf_name == "model.embed_tokens.weight":
    return "token_embd.weight"
  if hf_name == "model.norm.weight":
    return "output_norm.weight"
  if hf_name == "lm_head.weight":
    return "output.weight"
  _, _, layer, rest = hf_name.split(".", 3)
  if rest == "mlp.gate.e_score_correction_bias":
    return f"blk.{layer}.exp_probs_b.bias"
  if rest in ("self_attn.k_b_proj.weight", "self_attn.v_b_proj.weight"):
    return f"blk.{layer}.attn_{rest[len('self_attn.')]}_b.weight"
  if rest == "post_attention_layernorm.weight":
    kind = "post_attention_norm" if arch == "gemma3" else "ffn_norm"
  elif rest == "pre_feedforward_layernorm.weight":
    kind = "ffn_norm"
  elif rest == "post_feedforward_layernorm.weight":
    kind = "post_ffw_norm"
  elif rest.startswith("mlp.experts."):
    kind = "ffn_" + rest.removeprefix("mlp.experts.")
  else:
    kind = _LAYER[rest]
  return f"blk.{layer}.{kind}.weight"


def _split_kv_b(state: dict[str, np.ndarray], c) -> dict[str, np.ndarray]:
  """llama.cpp's deepseek2 conversion of kv_b_proj [H * (C + V), R]: keys [H, R, C] (each
  head's half transposed) and values [H, V, R], under pseudo-names `gguf_name` maps."""
  out = {}
  for name, w in state.items():
    if name.endswith("kv_b_proj.weight"):
      kv_b = np.asarray(w).reshape(c.num_attention_heads, c.qk_nope_head_dim + c.v_head_dim, -1)
      out[name.replace("kv_b_proj", "k_b_proj")] = kv_b[:, : c.qk_nope_head_dim].swapaxes(1, 2)
      out[name.replace("kv_b_proj", "v_b_proj")] = kv_b[:, c.qk_nope_head_dim :]
    else:
      out[name] = w
  return out


def _deepseek2_metadata(writer, c, split_kv_b: bool, overridden) -> None:
  """What llama.cpp's converter records for DeepSeek-V3 (MLA widths, routing), less the keys
  in `overridden` (written by the caller instead)."""
  a = "deepseek2"

  def add(kind: str, key: str, value) -> None:
    if key.removeprefix(f"{a}.") not in overridden:
      getattr(writer, f"add_{kind}")(key, value)

  if split_kv_b:  # MLA as multi-query attention over the latent
    add("uint32", f"{a}.attention.head_count_kv", 1)
    add("uint32", f"{a}.attention.key_length", c.kv_lora_rank + c.qk_rope_head_dim)
    add("uint32", f"{a}.attention.value_length", c.kv_lora_rank)
    add("uint32", f"{a}.attention.key_length_mla", c.qk_nope_head_dim + c.qk_rope_head_dim)
    add("uint32", f"{a}.attention.value_length_mla", c.v_head_dim)
  else:  # files from before the split
    add("uint32", f"{a}.attention.head_count_kv", c.num_attention_heads)
    add("uint32", f"{a}.attention.key_length", c.qk_nope_head_dim + c.qk_rope_head_dim)
    add("uint32", f"{a}.attention.value_length", c.v_head_dim)
  add("uint32", f"{a}.attention.kv_lora_rank", c.kv_lora_rank)
  if c.q_lora_rank:
    add("uint32", f"{a}.attention.q_lora_rank", c.q_lora_rank)
  add("uint32", f"{a}.rope.dimension_count", c.qk_rope_head_dim)
  add("uint32", f"{a}.leading_dense_block_count", c.first_k_dense_replace)
  add("uint32", f"{a}.expert_count", c.n_routed_experts)
  add("uint32", f"{a}.expert_used_count", c.num_experts_per_tok)
  add("uint32", f"{a}.expert_feed_forward_length", c.moe_intermediate_size)
  add("uint32", f"{a}.expert_shared_count", c.n_shared_experts)
  add("uint32", f"{a}.expert_group_count", c.n_group)
  add("uint32", f"{a}.expert_group_used_count", c.topk_group)
  add("float32", f"{a}.expert_weights_scale", c.routed_scaling_factor)
  if c.norm_topk_prob:
    add("bool", f"{a}.expert_weights_norm", True)
  add("uint32", f"{a}.expert_gating_func", 2)  # sigmoid


def _yarn_metadata(writer, arch: str, rope: dict) -> None:
  """llama.cpp's YaRN keys; for deepseek2 the converter stores 0.1 * mscale_all_dim as the
  log multiplier."""
  writer.add_string(f"{arch}.rope.scaling.type", "yarn")
  writer.add_float32(f"{arch}.rope.scaling.factor", rope["factor"])
  writer.add_uint32(
    f"{arch}.rope.scaling.original_context_length", rope["original_max_position_embeddings"]
  )
  if rope.get("mscale_all_dim"):
    writer.add_float32(f"{arch}.rope.scaling.yarn_log_multiplier", 0.1 * rope["mscale_all_dim"])


def write_gguf(
  path: Path,
  arch: str,
  hf_config,
  state: dict[str, np.ndarray],
  extra=None,
  split_kv_b=True,
  yarn=False,
):
  """A GGUF with F32 tensors plus the metadata our loader reads (no tokenizer). For deepseek2,
  `split_kv_b=False` writes the layout of files converted before llama.cpp split kv_b_proj;
  `yarn` records the HF config's YaRN RoPE parameters."""
  c = hf_config
  if arch == "deepseek2" and split_kv_b:
    state = _split_kv_b(state, c)
  writer = gguf.GGUFWriter(str(path), arch)
  writer.add_uint32(f"{arch}.block_count", c.num_hidden_layers)
  writer.add_uint32(f"{arch}.embedding_length", c.hidden_size)
  writer.add_uint32(f"{arch}.feed_forward_length", c.intermediate_size)
  writer.add_uint32(f"{arch}.attention.head_count", c.num_attention_heads)
  if arch == "deepseek2":
    _deepseek2_metadata(writer, c, split_kv_b, extra or {})
  else:
    writer.add_uint32(f"{arch}.attention.head_count_kv", c.num_key_value_heads)
    writer.add_uint32(f"{arch}.attention.key_length", c.head_dim)
  writer.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", c.rms_norm_eps)
  rope = c.rope_parameters
  theta = rope["full_attention"]["rope_theta"] if "full_attention" in rope else rope["rope_theta"]
  writer.add_float32(f"{arch}.rope.freq_base", theta)
  if yarn:
    _yarn_metadata(writer, arch, rope)
  writer.add_uint32(f"{arch}.vocab_size", c.vocab_size)
  if arch == "qwen3moe":
    writer.add_uint32(f"{arch}.expert_count", c.num_experts)
    writer.add_uint32(f"{arch}.expert_used_count", c.num_experts_per_tok)
    writer.add_uint32(f"{arch}.expert_feed_forward_length", c.moe_intermediate_size)
  for key, value in (extra or {}).items():
    writer.add_uint32(f"{arch}.{key}", value)
  for name, w in _expert_stacks(state).items():
    w = np.asarray(w, np.float32)
    if arch == "llama" and name.endswith("q_proj.weight"):
      w = llama_cpp_permute(w, c.num_attention_heads)
    if arch == "llama" and name.endswith("k_proj.weight"):
      w = llama_cpp_permute(w, c.num_key_value_heads)
    if arch == "gemma3" and name.endswith("norm.weight"):
      w = w + 1.0  # the converter folds Gemma's (1 + w) into the stored weight
    writer.add_tensor(gguf_name(name, arch), w)
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
