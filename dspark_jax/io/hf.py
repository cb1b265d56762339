"""HF checkpoint folders (config.json + *.safetensors) <-> dspark-jax params.

The HF tensor layout (torch Linear [out, in], names like `model.layers.3.self_attn.q_proj.weight`)
is also the meeting point for the GGUF loader, which renames its tensors into it.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

from dspark_jax.config import (
  MLAConfig,
  ModelConfig,
  MoEConfig,
  gemma3_layer_windows,
)
from dspark_jax.models.transformer import param_shapes
from dspark_jax.rope_scaling import YarnRope, deepseek_score_multiplier, yarn_mscale

_LAYER_INDEX = re.compile(r"model\.layers\.(\d+)\.")


class CheckpointError(ValueError):
  """A checkpoint is missing, corrupt or does not match the model config."""


_MODEL_TYPES = {
  "llama": "llama",
  "qwen3": "qwen3",
  "qwen3_moe": "qwen3",
  "gemma3_text": "gemma3",
  # DeepSeek-V3 is a llama-style block (pre-norms, SiLU) with MLA attention and routed experts.
  "deepseek_v3": "llama",
}


def _moe_from_hf(cfg: dict[str, Any], model_type: str, layers: int) -> MoEConfig | None:
  """Qwen3-MoE's or DeepSeek-V3's expert fields; None for the dense families."""
  if model_type == "deepseek_v3":
    return MoEConfig(
      num_experts=cfg.get("n_routed_experts") or cfg["num_local_experts"],
      experts_per_token=cfg["num_experts_per_tok"],
      expert_size=cfg["moe_intermediate_size"],
      router="sigmoid",
      normalize_weights=bool(cfg.get("norm_topk_prob", True)),
      num_groups=cfg.get("n_group") or 1,
      groups_per_token=cfg.get("topk_group") or 1,
      routed_scale=float(cfg.get("routed_scaling_factor", 1.0)),
      num_shared_experts=cfg.get("n_shared_experts") or 0,
      dense_layers=tuple(range(min(cfg.get("first_k_dense_replace") or 0, layers))),
    )
  # transformers 5 writes num_local_experts; the Hub's configs (transformers 4) num_experts.
  experts = cfg.get("num_local_experts") or cfg.get("num_experts")
  if model_type != "qwen3_moe" or not experts:
    return None
  step = cfg.get("decoder_sparse_step") or 1
  only_mlp = set(cfg.get("mlp_only_layers") or [])
  dense = tuple(i for i in range(layers) if i in only_mlp or (i + 1) % step)
  return MoEConfig(
    num_experts=experts,
    experts_per_token=cfg["num_experts_per_tok"],
    expert_size=cfg["moe_intermediate_size"],
    router="softmax",
    normalize_weights=bool(cfg.get("norm_topk_prob", False)),
    dense_layers=dense,
  )


def _rope_params(cfg: dict[str, Any], layer_type: str | None) -> dict[str, Any]:
  """RoPE parameters in the transformers 5 layout, also from a transformers 4 config."""
  params = cfg.get("rope_parameters")
  if params:
    if layer_type is not None and layer_type in params:
      return params[layer_type]
    if "rope_theta" in params or "rope_type" in params:
      return params
  scaling = cfg.get("rope_scaling") or {}
  if layer_type == "sliding_attention":
    return {"rope_type": "default", "rope_theta": cfg.get("rope_local_base_freq", 10000.0)}
  return {**scaling, "rope_theta": cfg.get("rope_theta", 10000.0)}


def _rope_kind(rope: dict[str, Any]) -> str:
  return rope.get("rope_type", rope.get("type", "default"))  # `type`: transformers 4 configs


def _rope_scaling(rope: dict[str, Any], max_positions: int | None) -> float | YarnRope:
  """The linear factor (1.0: none) or the YaRN scaling of HF RoPE parameters, with HF's
  defaults (`_compute_yarn_parameters` in transformers)."""
  kind = _rope_kind(rope)
  if kind == "default":
    return 1.0
  if kind == "linear":
    return float(rope["factor"])
  if kind == "yarn":
    original = int(rope["original_max_position_embeddings"])
    factor = rope.get("factor") or (max_positions or original) / original
    attention = rope.get("attention_factor")
    if attention is None:
      mscale, mscale_all = rope.get("mscale"), rope.get("mscale_all_dim")
      attention = (
        yarn_mscale(factor, mscale) / yarn_mscale(factor, mscale_all)
        if mscale and mscale_all
        else yarn_mscale(factor)
      )
    try:
      return YarnRope(
        factor=float(factor),
        original_context=original,
        beta_fast=float(rope.get("beta_fast") or 32),
        beta_slow=float(rope.get("beta_slow") or 1),
        attention_factor=float(attention),
        truncate=bool(rope.get("truncate", True)),
      )
    except ValueError as e:
      raise CheckpointError(f"bad yarn RoPE parameters: {e}") from None
  raise CheckpointError(
    f"unsupported RoPE scaling type {kind!r} (supported: default, linear, yarn)"
  )


def _mla_score_multiplier(rope: dict[str, Any]) -> float:
  """DeepSeek's extra softmax scale with scaled RoPE: mscale(factor, mscale_all_dim)^2 (HF's
  `yarn_apply_mscale`); it rescales the non-rotary dims too, unlike YaRN's cos/sin factor."""
  if _rope_kind(rope) == "default" or not rope.get("mscale_all_dim"):
    return 1.0
  return deepseek_score_multiplier(float(rope["factor"]), float(rope["mscale_all_dim"]))


def config_from_hf(cfg: dict[str, Any], dtype: str = "float32") -> ModelConfig:
  """Builds a ModelConfig from an HF `config.json` dict (transformers 4 or 5 layout)."""
  model_type = cfg.get("model_type")
  if model_type == "gemma3" and "text_config" in cfg:
    raise CheckpointError(
      "multimodal Gemma 3 checkpoints are not supported; use a text-only (gemma3_text) checkpoint"
    )
  if model_type not in _MODEL_TYPES:
    raise CheckpointError(
      f"unsupported architecture model_type={model_type!r}; supported: {sorted(_MODEL_TYPES)}"
    )
  family = _MODEL_TYPES[model_type]
  for flag in ("attention_bias", "mlp_bias"):
    if cfg.get(flag):
      raise CheckpointError(f"{flag}=true is not supported for {model_type}")
  act = cfg.get("hidden_activation") or cfg.get("hidden_act")
  want_act = "gelu_pytorch_tanh" if family == "gemma3" else "silu"
  if act not in (None, want_act):
    raise CheckpointError(f"unsupported activation {act!r} for {model_type} (expected {want_act})")

  heads = cfg["num_attention_heads"]
  head_dim = cfg.get("head_dim") or cfg["hidden_size"] // heads
  mla = None
  if model_type == "deepseek_v3":
    mla = MLAConfig(
      kv_lora_rank=cfg["kv_lora_rank"],
      qk_nope_head_dim=cfg["qk_nope_head_dim"],
      qk_rope_head_dim=cfg["qk_rope_head_dim"],
      v_head_dim=cfg["v_head_dim"],
      q_lora_rank=cfg.get("q_lora_rank"),
    )
    head_dim = mla.qk_rope_head_dim  # the rotary part's width, as HF's config sets head_dim
  layers = cfg["num_hidden_layers"]
  layer_types = cfg.get("layer_types")
  windows: tuple[int | None, ...] = ()
  if family == "gemma3":
    if layer_types:
      windows = tuple(
        cfg["sliding_window"] if t == "sliding_attention" else None for t in layer_types
      )
    else:
      pattern = cfg.get("sliding_window_pattern", cfg.get("_sliding_window_pattern", 6))
      windows = gemma3_layer_windows(layers, cfg["sliding_window"], pattern)
  elif layer_types and "sliding_attention" in layer_types and cfg.get("use_sliding_window"):
    windows = tuple(
      cfg["sliding_window"] if t == "sliding_attention" else None for t in layer_types
    )

  global_rope = _rope_params(cfg, "full_attention" if family == "gemma3" else None)
  local_rope = _rope_params(cfg, "sliding_attention") if family == "gemma3" else None
  max_positions = cfg.get("max_position_embeddings")
  if local_rope is not None and _rope_scaling(local_rope, max_positions) != 1.0:
    raise CheckpointError("RoPE scaling on sliding-window layers is not supported")
  scaling = _rope_scaling(global_rope, max_positions)
  if mla is not None:
    mla = dataclasses.replace(mla, score_multiplier=_mla_score_multiplier(global_rope))
  default_tie = family == "gemma3"
  return ModelConfig(
    family=family,
    vocab_size=cfg["vocab_size"],
    hidden_size=cfg["hidden_size"],
    intermediate_size=cfg["intermediate_size"],
    num_layers=layers,
    num_heads=heads,
    num_kv_heads=cfg.get("num_key_value_heads") or heads,
    head_dim=head_dim,
    rms_eps=cfg.get("rms_norm_eps", 1e-6),
    rope_theta=float(global_rope.get("rope_theta", 10000.0)),
    rope_scaling_factor=scaling if isinstance(scaling, float) else 1.0,
    rope_yarn=scaling if isinstance(scaling, YarnRope) else None,
    rope_local_theta=float(local_rope["rope_theta"]) if local_rope else None,
    layer_windows=windows,
    query_scale=cfg["query_pre_attn_scalar"] ** -0.5 if family == "gemma3" else None,
    attn_logit_softcap=cfg.get("attn_logit_softcapping"),
    final_logit_softcap=cfg.get("final_logit_softcapping"),
    tie_embeddings=cfg.get("tie_word_embeddings", default_tie),
    dtype=dtype,
    context_length=int(cfg["max_position_embeddings"])
    if cfg.get("max_position_embeddings")
    else None,
    moe=_moe_from_hf(cfg, model_type, layers),
    mla=mla,
  )


def params_from_hf_tensors(
  config: ModelConfig,
  get: Callable[[str], np.ndarray | None],
  dtype: str | None = None,
  rope_interleaved: bool = False,
):
  """Builds the params pytree from HF-named tensors in torch layout.

  Args:
    config: the target's config.
    get: returns the tensor of an HF name (e.g. `model.norm.weight`) or None if absent.
    dtype: storage dtype of the params (default: the config's dtype).
    rope_interleaved: MLA checkpoints whose rotary dims pair up as (0, 1), (2, 3), ...
      (DeepSeek's `rope_interleave`); their projections' rotary outputs are permuted to the
      half-split layout our RoPE uses (evens, then odds), which leaves every score unchanged.

  Raises:
    CheckpointError: a tensor is missing or has the wrong shape.
  """
  c = config
  h, n, k, d, f, v = (
    c.num_heads,
    c.num_kv_heads,
    c.head_dim,
    c.hidden_size,
    c.intermediate_size,
    c.vocab_size,
  )
  # The config fields each axis comes from, for errors that say which field disagrees.
  axes = {
    "d": ("hidden_size", d),
    "v": ("vocab_size", v),
    "f": ("intermediate_size", f),
    "hk": ("num_attention_heads x head_dim", h * k),
    "nk": ("num_key_value_heads x head_dim", n * k),
    "k": ("head_dim", k),
  }

  def fetch(name: str, *torch_axes: str) -> np.ndarray:
    """The tensor `name`, checked to have the torch shape the config implies."""
    tensor = get(name)
    if tensor is None:
      raise CheckpointError(f"checkpoint has no tensor {name!r}")
    w = np.asarray(tensor)
    want = tuple(axes[a][1] for a in torch_axes)
    if w.shape != want:
      fields = ", ".join(f"{axes[a][0]}={axes[a][1]}" for a in torch_axes)
      raise CheckpointError(
        f"tensor {name} has shape {tuple(w.shape)}, but config.json implies {want} ({fields}): "
        "the config does not describe this checkpoint"
      )
    return w

  def linear(name: str, out_axis: str, in_axis: str, out_shape: tuple[int, ...]) -> np.ndarray:
    """torch [out, in] -> ours [in, *out_shape]."""
    w = fetch(name, out_axis, in_axis)
    return w.reshape(*out_shape, w.shape[1]).transpose(-1, *range(len(out_shape)))

  if c.moe is not None:
    m = c.moe
    axes.update(
      e=("num_experts", m.num_experts),
      i=("moe_intermediate_size", m.expert_size),
      i2=("2 x moe_intermediate_size", 2 * m.expert_size),
      si=("n_shared_experts x moe_intermediate_size", m.num_shared_experts * m.expert_size),
    )
  if c.mla is not None:
    a = c.mla
    axes.update(
      qr=("q_lora_rank", a.q_lora_rank),
      hq=(
        "num_attention_heads x (qk_nope_head_dim + qk_rope_head_dim)",
        h * (a.qk_nope_head_dim + k),
      ),
      kvr=("kv_lora_rank + qk_rope_head_dim", a.kv_lora_rank + k),
      r=("kv_lora_rank", a.kv_lora_rank),
      hkv=(
        "num_attention_heads x (qk_nope_head_dim + v_head_dim)",
        h * (a.qk_nope_head_dim + a.v_head_dim),
      ),
      hv=("num_attention_heads x v_head_dim", h * a.v_head_dim),
    )
  # Half-split order of interleaved rotary dims: (0, 2, 4, ..., 1, 3, 5, ...).
  rope_order = np.concatenate([np.arange(0, k, 2), np.arange(1, k, 2)])

  def latent_attention(pre: str) -> dict[str, Any]:
    """MLA's projections (`models/mla.py`): kv_b_proj split into its key and value halves."""
    a, nope = c.mla, c.mla.qk_nope_head_dim
    out: dict[str, Any] = {}
    if a.q_lora_rank is not None:
      out["q_a_proj"] = linear(pre + "q_a_proj.weight", "qr", "d", (a.q_lora_rank,))
      out["q_a_norm"] = {"scale": fetch(pre + "q_a_layernorm.weight", "qr")}
      q = linear(pre + "q_b_proj.weight", "hq", "qr", (h, nope + k))
    else:
      q = linear(pre + "q_proj.weight", "hq", "d", (h, nope + k))
    kv_a = linear(pre + "kv_a_proj_with_mqa.weight", "kvr", "d", (a.kv_lora_rank + k,))
    if rope_interleaved:  # new arrays: the tensors read may be read-only views
      q = np.concatenate([q[..., :nope], q[..., nope + rope_order]], axis=-1)
      r = a.kv_lora_rank
      kv_a = np.concatenate([kv_a[:, :r], kv_a[:, r + rope_order]], axis=-1)
    out["q_b_proj" if a.q_lora_rank is not None else "q_proj"] = q
    out["kv_a_proj"] = kv_a
    out["kv_a_norm"] = {"scale": fetch(pre + "kv_a_layernorm.weight", "r")}
    kv_b = fetch(pre + "kv_b_proj.weight", "hkv", "r").reshape(h, nope + a.v_head_dim, -1)
    out["k_b_proj"] = kv_b[:, :nope].transpose(2, 0, 1)  # [R, H, C]
    out["v_b_proj"] = kv_b[:, nope:].transpose(2, 0, 1)  # [R, H, V]
    out["o_proj"] = fetch(pre + "o_proj.weight", "d", "hv").T.reshape(h, a.v_head_dim, d)
    return out

  def expert_params(pre: str) -> dict[str, np.ndarray]:
    """Router and experts stacked [E, ...], from per-expert tensors (the Hub's layout) or the
    stacked `experts.gate_up_proj` / `experts.down_proj` of transformers 5's in-memory layout;
    DeepSeek-V3's router bias and shared experts."""
    e = c.moe.num_experts
    out: dict[str, Any] = {"router": fetch(pre + "gate.weight", "e", "d").T}
    if c.moe.router == "sigmoid":
      out["router_bias"] = fetch(pre + "gate.e_score_correction_bias", "e")
    if c.moe.num_shared_experts:
      shared = pre + "shared_experts."
      out["shared"] = {
        "gate_proj": linear(shared + "gate_proj.weight", "si", "d", (axes["si"][1],)),
        "up_proj": linear(shared + "up_proj.weight", "si", "d", (axes["si"][1],)),
        "down_proj": linear(shared + "down_proj.weight", "d", "si", (d,)),
      }
    if get(pre + "experts.gate_up_proj") is not None:
      gate_up = fetch(pre + "experts.gate_up_proj", "e", "i2", "d")  # [E, 2I, D]
      gate, up = np.split(gate_up, 2, axis=1)
      down = fetch(pre + "experts.down_proj", "e", "d", "i")  # [E, D, I]
    else:
      gate = np.stack([fetch(f"{pre}experts.{j}.gate_proj.weight", "i", "d") for j in range(e)])
      up = np.stack([fetch(f"{pre}experts.{j}.up_proj.weight", "i", "d") for j in range(e)])
      down = np.stack([fetch(f"{pre}experts.{j}.down_proj.weight", "d", "i") for j in range(e)])
    out["gate_proj"] = gate.transpose(0, 2, 1)  # [E, D, I]
    out["up_proj"] = up.transpose(0, 2, 1)
    out["down_proj"] = down.transpose(0, 2, 1)  # [E, I, D]
    return out

  params: dict[str, Any] = {
    "embedding": fetch("model.embed_tokens.weight", "v", "d"),
    "final_norm": {"scale": fetch("model.norm.weight", "d")},
  }
  if not c.tie_embeddings:
    params["lm_head"] = linear("lm_head.weight", "v", "d", (v,))
  for i in range(c.num_layers):
    pre = f"model.layers.{i}."
    if c.mla is not None:
      attn = latent_attention(pre + "self_attn.")
    else:
      attn = {
        "q_proj": linear(pre + "self_attn.q_proj.weight", "hk", "d", (h, k)),
        "k_proj": linear(pre + "self_attn.k_proj.weight", "nk", "d", (n, k)),
        "v_proj": linear(pre + "self_attn.v_proj.weight", "nk", "d", (n, k)),
        # o_proj: torch [D, H*K] -> ours [H, K, D]
        "o_proj": fetch(pre + "self_attn.o_proj.weight", "d", "hk").T.reshape(h, k, d),
      }
    if c.qk_norm:
      attn["q_norm"] = {"scale": fetch(pre + "self_attn.q_norm.weight", "k")}
      attn["k_norm"] = {"scale": fetch(pre + "self_attn.k_norm.weight", "k")}
    if c.is_moe(i):
      mlp = expert_params(pre + "mlp.")
    else:
      mlp = {
        "gate_proj": linear(pre + "mlp.gate_proj.weight", "f", "d", (f,)),
        "up_proj": linear(pre + "mlp.up_proj.weight", "f", "d", (f,)),
        "down_proj": linear(pre + "mlp.down_proj.weight", "d", "f", (d,)),
      }
    layer = {
      "attn": attn,
      "mlp": mlp,
      "input_norm": {"scale": fetch(pre + "input_layernorm.weight", "d")},
    }
    if c.gemma_style:
      layer["post_attn_norm"] = {"scale": fetch(pre + "post_attention_layernorm.weight", "d")}
      layer["pre_mlp_norm"] = {"scale": fetch(pre + "pre_feedforward_layernorm.weight", "d")}
      layer["post_mlp_norm"] = {"scale": fetch(pre + "post_feedforward_layernorm.weight", "d")}
    else:
      # Llama's "post_attention_layernorm" is the norm in front of the MLP.
      layer["pre_mlp_norm"] = {"scale": fetch(pre + "post_attention_layernorm.weight", "d")}
    params[f"layers_{i}"] = layer

  _check_shapes(params, param_shapes(c))
  store = np.dtype(jax.numpy.dtype(dtype or c.dtype))
  return jax.tree.map(lambda x: np.ascontiguousarray(x, dtype=store), params)


def _check_shapes(params, expected) -> None:
  """Raises CheckpointError naming every parameter whose shape differs from the config's."""
  flat = lambda tree: {
    jax.tree_util.keystr(p): tuple(x.shape) for p, x in jax.tree_util.tree_leaves_with_path(tree)
  }
  got, want = flat(params), flat(expected)
  problems = [f"{k}: got {got.get(k)}, expected {v}" for k, v in want.items() if got.get(k) != v]
  if problems:
    raise CheckpointError("checkpoint does not match the config: " + "; ".join(problems[:5]))


def _safetensors_index(folder: Path) -> dict[str, Path]:
  """Tensor name -> file, from `model.safetensors.index.json` or the single/all shard files."""
  index = folder / "model.safetensors.index.json"
  if index.is_file():
    weight_map = json.loads(index.read_text())["weight_map"]
    return {name: folder / file for name, file in weight_map.items()}
  files = sorted(folder.glob("*.safetensors"))
  if not files:
    raise CheckpointError(f"no *.safetensors files in {folder}")
  names = {}
  for file in files:
    names.update({name: file for name in _open_safetensors(file).keys()})  # noqa: SIM118
  return names


def _open_safetensors(file: Path):
  # The "flax" framework reads bfloat16 (released checkpoints are bf16; numpy has no bf16).
  from safetensors import SafetensorError, safe_open

  try:
    return safe_open(file, "flax")
  except (SafetensorError, OSError) as e:
    raise CheckpointError(f"cannot read {file}: {e}") from None


def read_config_json(folder: Path) -> dict[str, Any]:
  """The folder's config.json as a dict; CheckpointError if absent or malformed."""
  config_file = folder / "config.json"
  if not config_file.is_file():
    raise CheckpointError(f"{folder} is not an HF checkpoint folder: no config.json")
  try:
    return json.loads(config_file.read_text())
  except json.JSONDecodeError as e:
    raise CheckpointError(f"{config_file} is not valid JSON: {e}") from None


def tensor_getter(folder: Path) -> Callable[[str], np.ndarray | None]:
  """name -> float32 numpy tensor (None if absent) over the folder's safetensors files."""
  where = _safetensors_index(folder)
  handles: dict[Path, Any] = {}

  def get(name: str):
    file = where.get(name)
    if file is None:
      return None
    if file not in handles:
      handles[file] = _open_safetensors(file)
    return np.asarray(handles[file].get_tensor(name).astype(np.float32))

  get.names = frozenset(where)  # type: ignore[attr-defined]
  return get


def load_hf_folder(path: str | Path, dtype: str = "float32"):
  """Loads `(config, params)` from an HF checkpoint folder.

  Raises:
    CheckpointError: missing folder/config/tensors, corrupt files, or unsupported architecture.
  """
  from safetensors import SafetensorError

  folder = Path(path)
  cfg = read_config_json(folder)
  config = config_from_hf(cfg, dtype)
  interleaved = config.mla is not None and bool(cfg.get("rope_interleave", True))
  get = tensor_getter(folder)
  read = set()

  def get_and_record(name: str):
    read.add(name)
    return get(name)

  try:
    params = params_from_hf_tensors(config, get_and_record, rope_interleaved=interleaved)
  except SafetensorError as e:
    raise CheckpointError(f"corrupt safetensors file in {folder}: {e}") from None
  _refuse_unused(folder, config, sorted(get.names - read))
  return config, params


# Tensors a checkpoint may carry that no forward reads: RoPE tables of old Llama exports, and a
# tied model's copy of its embedding as lm_head.
_IGNORABLE = ("rotary_emb.inv_freq",)


def _refuse_unused(folder: Path, config: ModelConfig, unused: list[str]) -> None:
  """Raises CheckpointError if the checkpoint holds weights the config does not use: a config
  with fewer layers (or no lm_head) than its tensors would load as a different, smaller model."""
  unused = [
    name
    for name in unused
    if not name.endswith(_IGNORABLE) and not (name == "lm_head.weight" and config.tie_embeddings)
  ]
  if not unused:
    return
  layers = sorted({int(m.group(1)) for m in map(_LAYER_INDEX.match, unused) if m})
  hint = ""
  if layers and layers[0] >= config.num_layers:
    hint = (
      f"; config.json has num_hidden_layers={config.num_layers} but the checkpoint holds "
      f"{layers[-1] + 1} layers"
    )
  raise CheckpointError(
    f"{folder}: {len(unused)} checkpoint tensors are not used by the model config.json describes "
    f"({', '.join(unused[:4])}{', ...' if len(unused) > 4 else ''}){hint}"
  )
