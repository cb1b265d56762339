"""GGUF files (llama.cpp) -> ModelConfig + params + tokenizer metadata.

Every tensor is dequantised to float on the host with the `gguf` package's reference
implementation, renamed into the HF layout and handed to `params_from_hf_tensors`, so both
loaders share one mapping. Two llama.cpp conventions are undone on the way:
  * for the `llama` architecture the converter permutes the rows of Q and K so that llama.cpp's
    interleaved-pair RoPE equals HF's half-split RoPE; we use the half-split form, so the
    permutation is inverted here;
  * for Gemma the converter stores norm weights as (1 + w); our Gemma norms apply (1 + w), so
    1 is subtracted;
  * for DeepSeek-V2/V3 (`deepseek2`, MLA) the converter splits kv_b_proj into a per-head key
    half, transposed ([H, R, C], `attn_k_b`), and a value half ([H, V, R], `attn_v_b`), and
    records one key/value head (llama.cpp runs MLA as multi-query attention over the latent);
    the two halves are joined back into kv_b_proj. Files from before that split carry
    `attn_kv_b` itself and are read as they are. The rotary dims stay in DeepSeek's interleaved
    order in both (no permutation), as in the HF checkpoint.
YaRN RoPE scaling is read from llama.cpp's `rope.scaling.*` keys (`_yarn_from_gguf`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from dspark_jax.config import (
  MLAConfig,
  ModelConfig,
  MoEConfig,
  gemma3_layer_windows,
)
from dspark_jax.io.gguf_file import GGUFFile, GGUFFormatError, read_gguf
from dspark_jax.io.hf import CheckpointError, params_from_hf_tensors
from dspark_jax.rope_scaling import YarnRope, deepseek_score_multiplier, yarn_mscale

# Tensor types this loader dequantises: every type in the bundled SmolLM2 and Gemma 3 files
# plus the plain float types. Others are refused by name rather than guessed at.
SUPPORTED_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q6_K")

_ARCHITECTURES = {
  "llama": "llama",
  "qwen3": "qwen3",
  "qwen3moe": "qwen3",
  "gemma3": "gemma3",
  # DeepSeek-V2/V3 (llama.cpp names both deepseek2): llama-style blocks with MLA and routed
  # experts, as in the HF loader.
  "deepseek2": "llama",
}

_LAYER_NAMES = {
  "attn_q": "self_attn.q_proj.weight",
  "attn_k": "self_attn.k_proj.weight",
  "attn_v": "self_attn.v_proj.weight",
  "attn_output": "self_attn.o_proj.weight",
  "attn_q_norm": "self_attn.q_norm.weight",
  "attn_k_norm": "self_attn.k_norm.weight",
  "attn_norm": "input_layernorm.weight",
  "post_attention_norm": "post_attention_layernorm.weight",
  "post_ffw_norm": "post_feedforward_layernorm.weight",
  "ffn_gate": "mlp.gate_proj.weight",
  "ffn_up": "mlp.up_proj.weight",
  "ffn_down": "mlp.down_proj.weight",
  "ffn_gate_inp": "mlp.gate.weight",  # the MoE router
  # DeepSeek's multi-head latent attention and shared experts.
  "attn_q_a": "self_attn.q_a_proj.weight",
  "attn_q_a_norm": "self_attn.q_a_layernorm.weight",
  "attn_q_b": "self_attn.q_b_proj.weight",
  "attn_kv_a_mqa": "self_attn.kv_a_proj_with_mqa.weight",
  "attn_kv_a_norm": "self_attn.kv_a_layernorm.weight",
  "attn_kv_b": "self_attn.kv_b_proj.weight",
  "ffn_gate_shexp": "mlp.shared_experts.gate_proj.weight",
  "ffn_up_shexp": "mlp.shared_experts.up_proj.weight",
  "ffn_down_shexp": "mlp.shared_experts.down_proj.weight",
}
# llama.cpp stores an MoE layer's experts as three stacks: gate and up [E, I, D], down [E, D, I]
# (torch layout); they are handed over as transformers 5's stacked gate_up [E, 2I, D] and down.
_EXPERT_STACKS = {
  "mlp.experts.gate_up_proj": ("ffn_gate_exps", "ffn_up_exps"),
  "mlp.experts.down_proj": ("ffn_down_exps",),
}


def _hf_name(gguf_name: str, family: str) -> str | None:
  if gguf_name == "token_embd.weight":
    return "model.embed_tokens.weight"
  if gguf_name == "output_norm.weight":
    return "model.norm.weight"
  if gguf_name == "output.weight":
    return "lm_head.weight"
  parts = gguf_name.split(".")
  if len(parts) != 4 or parts[0] != "blk":
    return None
  layer, kind = parts[1], parts[2]
  if kind == "exp_probs_b" and parts[3] == "bias":  # DeepSeek-V3's router correction bias
    return f"model.layers.{layer}.mlp.gate.e_score_correction_bias"
  if parts[3] != "weight":
    return None
  if kind == "ffn_norm":
    # The norm in front of the MLP: Llama calls it post_attention_layernorm.
    suffix = (
      "pre_feedforward_layernorm.weight"
      if family == "gemma3"
      else "post_attention_layernorm.weight"
    )
  elif kind in _LAYER_NAMES:
    suffix = _LAYER_NAMES[kind]
  else:
    return None
  return f"model.layers.{layer}.{suffix}"


def open_gguf(path: str | Path) -> GGUFFile:
  """Opens a GGUF file, turning a missing or corrupt file into a CheckpointError."""
  path = Path(path)
  if not path.is_file():
    raise CheckpointError(f"model file {path} does not exist")
  try:
    return read_gguf(path)
  except GGUFFormatError as e:
    raise CheckpointError(f"{path} is not a valid GGUF file ({e})") from None


def config_from_gguf(meta: dict[str, Any], tensor_names: set[str], dtype: str = "float32"):
  arch = meta.get("general.architecture")
  if arch not in _ARCHITECTURES:
    raise CheckpointError(
      f"unsupported GGUF architecture {arch!r}; supported: {sorted(_ARCHITECTURES)}"
    )
  family = _ARCHITECTURES[arch]

  def get(key: str, default=None):
    value = meta.get(f"{arch}.{key}", default)
    if value is None:
      raise CheckpointError(f"GGUF metadata lacks {arch}.{key}")
    return value

  hidden = int(get("embedding_length"))
  heads = int(get("attention.head_count"))
  layers = int(get("block_count"))
  head_dim = int(meta.get(f"{arch}.attention.key_length") or hidden // heads)
  vocab = int(meta.get(f"{arch}.vocab_size") or len(meta.get("tokenizer.ggml.tokens") or ()))
  scaling = meta.get(f"{arch}.rope.scaling.type", "none")
  if scaling not in ("none", "linear", "yarn"):
    raise CheckpointError(f"unsupported RoPE scaling type {scaling!r} in GGUF metadata")
  factor = float(meta.get(f"{arch}.rope.scaling.factor", 1.0)) if scaling == "linear" else 1.0
  yarn = _yarn_from_gguf(get, meta, arch) if scaling == "yarn" else None
  extra: dict[str, Any] = {}
  if family == "gemma3":
    # llama.cpp fixes these for Gemma 3 rather than storing them: every 6th layer global,
    # local RoPE base 10000, query scale 1/sqrt(head_dim) (the 27B model, 62 layers, uses
    # 1/sqrt(hidden/heads)).
    extra = dict(
      layer_windows=gemma3_layer_windows(layers, int(get("attention.sliding_window")), 6),
      rope_local_theta=10000.0,
      query_scale=(hidden // heads if layers == 62 else head_dim) ** -0.5,
      attn_logit_softcap=meta.get(f"{arch}.attn_logit_softcapping"),
      final_logit_softcap=meta.get(f"{arch}.final_logit_softcapping"),
    )
  routed = {i for i in range(layers) if f"blk.{i}.ffn_gate_inp.weight" in tensor_names}
  kv_heads = int(meta.get(f"{arch}.attention.head_count_kv") or heads)
  if arch == "deepseek2":
    extra = _deepseek2_fields(get, meta, arch, layers, routed)
    if yarn is not None:
      # DeepSeek rescales every score by mscale(factor, mscale_all_dim)^2; llama.cpp's converter
      # stores 0.1 * mscale_all_dim as the log multiplier.
      log_mul = float(meta.get(f"{arch}.rope.scaling.yarn_log_multiplier", 0.0))
      multiplier = deepseek_score_multiplier(yarn.factor, log_mul / 0.1)
      extra["mla"] = dataclasses.replace(extra["mla"], score_multiplier=multiplier)
    head_dim, kv_heads = extra["mla"].qk_rope_head_dim, heads  # as the HF loader sets them
  elif f"{arch}.expert_count" in meta:
    extra["moe"] = MoEConfig(
      num_experts=int(get("expert_count")),
      experts_per_token=int(get("expert_used_count")),
      expert_size=int(get("expert_feed_forward_length")),
      router="softmax",
      # Qwen3-MoE renormalises its top-k weights (llama.cpp's graph does so unconditionally).
      normalize_weights=bool(meta.get(f"{arch}.expert_weights_norm", True)),
      dense_layers=tuple(i for i in range(layers) if i not in routed),
    )
  return ModelConfig(
    family=family,
    vocab_size=vocab,
    hidden_size=hidden,
    intermediate_size=int(get("feed_forward_length")),
    num_layers=layers,
    num_heads=heads,
    num_kv_heads=kv_heads,
    head_dim=head_dim,
    rms_eps=float(get("attention.layer_norm_rms_epsilon")),
    rope_theta=float(meta.get(f"{arch}.rope.freq_base", 10000.0)),
    rope_scaling_factor=factor,
    rope_yarn=yarn,
    tie_embeddings="output.weight" not in tensor_names,
    dtype=dtype,
    context_length=_positive_or_none(meta.get(f"{arch}.context_length")),
    **extra,
  )


def _yarn_from_gguf(get, meta: dict[str, Any], arch: str) -> YarnRope:
  """llama.cpp's YaRN keys. Its RoPE multiplies cos and sin by attn_factor * mscale(factor);
  for deepseek2 the graph passes an attn_factor that cancels mscale(factor) (DeepSeek's
  mscale = mscale_all_dim), so the rotation's magnitude is 1 there."""
  factor = float(get("rope.scaling.factor"))
  magnitude = (
    1.0
    if arch == "deepseek2"
    else float(meta.get(f"{arch}.rope.scaling.attn_factor", 1.0)) * yarn_mscale(factor)
  )
  try:
    return YarnRope(
      factor=factor,
      original_context=int(get("rope.scaling.original_context_length")),
      beta_fast=float(meta.get(f"{arch}.rope.scaling.yarn_beta_fast") or 32.0),
      beta_slow=float(meta.get(f"{arch}.rope.scaling.yarn_beta_slow") or 1.0),
      attention_factor=magnitude,
    )
  except ValueError as e:
    raise CheckpointError(f"bad YaRN metadata: {e}") from None


def _deepseek2_fields(get, meta: dict[str, Any], arch: str, layers: int, routed: set[int]):
  """MLA and DeepSeek-V3 routing from a `deepseek2` file's metadata.

  Files written since llama.cpp split kv_b_proj record MLA's per-head widths under
  `key_length_mla` / `value_length_mla` (`key_length` is then the latent plus the rotary key);
  older files have them under `key_length` / `value_length`.
  """
  rope = int(get("rope.dimension_count"))
  key = int(meta.get(f"{arch}.attention.key_length_mla") or get("attention.key_length"))
  value = int(meta.get(f"{arch}.attention.value_length_mla") or get("attention.value_length"))
  q_rank = meta.get(f"{arch}.attention.q_lora_rank")
  mla = MLAConfig(
    kv_lora_rank=int(get("attention.kv_lora_rank")),
    qk_nope_head_dim=key - rope,
    qk_rope_head_dim=rope,
    v_head_dim=value,
    q_lora_rank=int(q_rank) if q_rank else None,
  )
  if not routed:
    return {"mla": mla}
  gating = int(meta.get(f"{arch}.expert_gating_func", 1))
  if gating != 2:
    # DeepSeek-V2's softmax routing (group-limited by each group's best score) is not the
    # Qwen3 softmax router, so it is refused rather than approximated.
    raise CheckpointError(
      f"{arch}: expert_gating_func={gating} (softmax, DeepSeek-V2) is not supported; only "
      "DeepSeek-V3's sigmoid routing (2) is"
    )
  moe = MoEConfig(
    num_experts=int(get("expert_count")),
    experts_per_token=int(get("expert_used_count")),
    expert_size=int(get("expert_feed_forward_length")),
    router="sigmoid",
    normalize_weights=bool(meta.get(f"{arch}.expert_weights_norm", False)),
    num_groups=int(meta.get(f"{arch}.expert_group_count") or 1),
    groups_per_token=int(meta.get(f"{arch}.expert_group_used_count") or 1),
    routed_scale=float(meta.get(f"{arch}.expert_weights_scale", 1.0)),
    num_shared_experts=int(meta.get(f"{arch}.expert_shared_count", 0)),
    dense_layers=tuple(i for i in range(layers) if i not in routed),
  )
  return {"mla": mla, "moe": moe}


def _positive_or_none(value) -> int | None:
  return int(value) if value is not None and int(value) > 0 else None


def _unpermute_rows(w_RxD: np.ndarray, heads: int) -> np.ndarray:
  """Inverts llama.cpp's Q/K row permutation: per head, rows (pairs interleaved) -> halves."""
  rows, cols = w_RxD.shape
  return w_RxD.reshape(heads, rows // heads // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


def dequantize(file: GGUFFile, name: str) -> np.ndarray:
  """One GGUF tensor as float32 in torch layout ([out, in] or [n])."""
  import gguf

  info = file.tensors[name]
  kind = gguf.GGMLQuantizationType(info.type_id).name
  if kind not in SUPPORTED_TYPES:
    raise CheckpointError(
      f"tensor {name} has unsupported GGUF type {kind}; supported: {SUPPORTED_TYPES}"
    )
  try:
    raw = file.raw(name)
  except GGUFFormatError as e:
    raise CheckpointError(f"{file.path}: {e}") from None
  return np.asarray(
    gguf.quants.dequantize(raw, gguf.GGMLQuantizationType(info.type_id)), np.float32
  )


def _joined_kv_b(file: GGUFFile, layer: str) -> np.ndarray | None:
  """kv_b_proj [H * (C + V), R] from llama.cpp's split halves: keys [H, R, C] (transposed per
  head) and values [H, V, R]."""
  k_name, v_name = f"blk.{layer}.attn_k_b.weight", f"blk.{layer}.attn_v_b.weight"
  if k_name not in file.tensors or v_name not in file.tensors:
    return None
  k_b, v_b = dequantize(file, k_name), dequantize(file, v_name)
  if k_b.ndim != 3 or v_b.ndim != 3 or k_b.shape[0] != v_b.shape[0] or k_b.shape[1] != v_b.shape[2]:
    raise CheckpointError(
      f"{file.path}: blk.{layer} attn_k_b {k_b.shape} and attn_v_b {v_b.shape} are not the "
      "halves of one kv_b_proj ([H, R, C] and [H, V, R])"
    )
  joined = np.concatenate([k_b.transpose(0, 2, 1), v_b], axis=1)  # [H, C + V, R]
  return joined.reshape(-1, joined.shape[-1])


def load_gguf(path: str | Path, dtype: str = "float32"):
  """Loads `(config, params, metadata)` from a GGUF file.

  Raises:
    CheckpointError: missing/corrupt file, unsupported architecture or tensor type, or tensors
      that do not match the metadata.
  """
  file = open_gguf(path)
  meta = file.metadata
  config = config_from_gguf(meta, set(file.tensors), dtype)
  by_hf_name = {}
  for name in file.tensors:
    hf_name = _hf_name(name, config.family)
    if hf_name is not None:
      by_hf_name[hf_name] = name

  def get(hf_name: str):
    layer, _, rest = hf_name.removeprefix("model.layers.").partition(".")
    if rest in _EXPERT_STACKS:
      names = [f"blk.{layer}.{kind}.weight" for kind in _EXPERT_STACKS[rest]]
      if not all(n in file.tensors for n in names):
        return None
      return np.concatenate([dequantize(file, n) for n in names], axis=1)
    name = by_hf_name.get(hf_name)
    if name is None and rest == "self_attn.kv_b_proj.weight":
      return _joined_kv_b(file, layer)
    if name is None:
      return None
    w = dequantize(file, name)
    if config.family == "llama" and hf_name.endswith(("q_proj.weight", "k_proj.weight")):
      heads = config.num_heads if "q_proj" in hf_name else config.num_kv_heads
      w = _unpermute_rows(w, heads)
    if config.gemma_style and hf_name.endswith("norm.weight"):
      w = w - 1.0
    return w

  try:
    # DeepSeek's rotary dims are interleaved in GGUF as in the HF checkpoint.
    params = params_from_hf_tensors(config, get, rope_interleaved=config.mla is not None)
  except (ValueError, IndexError) as e:
    if isinstance(e, CheckpointError):
      raise
    raise CheckpointError(f"{path}: tensor data is corrupt or truncated ({e})") from None
  return config, params, meta
