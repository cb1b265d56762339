"""Drafters in the released DeepSpec format: an HF folder that GPU engines and DeepSpec read.

`config.json` is what DeepSpec writes: its Qwen3 target config with the drafter fields
(block_size, mask_token_id, target_layer_ids, num_anchors, markov_rank, markov_head_type as
"vanilla" / "gated" / "rnn", enable_confidence_head, confidence_head_with_markov; Eagle3's
ttt_length, step_loss_decay) set; we read "markov" (our earlier spelling) as "vanilla" too.
`model.safetensors` holds torch-layout tensors ([out, in] for linear maps) named as DeepSpec
names them (`fc.weight`, `layers.{i}.self_attn.q_proj.weight`, `markov_head.markov_w1.weight`,
...). The embedding and LM head are written from the target's frozen arrays (DeepSpec ships them
in every drafter) and read back only to check them. Tested both ways against folders DeepSpec
itself wrote (tests/io/data/deepspec_fixture).

Supported: Qwen3-style drafters (architectures `Qwen3DSparkModel`, `Qwen3Eagle3Model`), which
is what we train for every target family. `Gemma4DSparkModel` folders are refused with a clear
error: their layer layout is not part of the format description we work from.

V4-style drafters (ours; DeepSpec's format has no MoE or windowed drafter). The context window
is written as HF's Qwen3 fields say it (`sliding_window`, `use_sliding_window`, `layer_types`
of "sliding_attention"). MoE layers have no field in DeepSpec's format: we add a `"moe"` object
(our `MoEConfig` fields) and name the tensors as HF's Qwen3-MoE / DeepSeek-V3 do
(`mlp.gate.weight`, `mlp.gate.e_score_correction_bias`, `mlp.experts.{j}.{gate,up,down}_proj
.weight`, `mlp.shared_experts.*`). A reader that does not know the extension fails loudly on the
unknown tensors; it does not load a wrong model.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import traverse_util

from dspark_jax.config import DraftConfig, ModelConfig, MoEConfig
from dspark_jax.drafters.build import make_drafter
from dspark_jax.drafters.draft_vocab import draft_frozen
from dspark_jax.io.hf import CheckpointError, read_config_json, tensor_getter

ARCHITECTURES = {
  "dspark": "Qwen3DSparkModel",
  "dflash": "Qwen3DSparkModel",
  "eagle3": "Qwen3Eagle3Model",
}

# Our layer-local names -> (DeepSpec name, number of leading input axes in our layout).
# A tensor with n input axes is torch's w.reshape(prod(in), -1).T; n = 0 means same layout.
_LAYER = {
  ("attn", "q_proj"): ("self_attn.q_proj.weight", 1),
  ("attn", "k_proj"): ("self_attn.k_proj.weight", 1),
  ("attn", "v_proj"): ("self_attn.v_proj.weight", 1),
  ("attn", "o_proj"): ("self_attn.o_proj.weight", 2),
  ("attn", "q_norm", "scale"): ("self_attn.q_norm.weight", 0),
  ("attn", "k_norm", "scale"): ("self_attn.k_norm.weight", 0),
  ("mlp", "gate_proj"): ("mlp.gate_proj.weight", 1),
  ("mlp", "up_proj"): ("mlp.up_proj.weight", 1),
  ("mlp", "down_proj"): ("mlp.down_proj.weight", 1),
  ("input_norm", "scale"): ("input_layernorm.weight", 0),
  ("pre_mlp_norm", "scale"): ("post_attention_layernorm.weight", 0),
  # Routed-expert layers (`DraftConfig.moe`), named as Qwen3-MoE / DeepSeek-V3 name theirs; the
  # stacked expert weights [E, ...] are written one tensor per expert (`_EXPERT_STACKS`).
  ("mlp", "router"): ("mlp.gate.weight", 1),
  ("mlp", "router_bias"): ("mlp.gate.e_score_correction_bias", 0),
  ("mlp", "shared", "gate_proj"): ("mlp.shared_experts.gate_proj.weight", 1),
  ("mlp", "shared", "up_proj"): ("mlp.shared_experts.up_proj.weight", 1),
  ("mlp", "shared", "down_proj"): ("mlp.shared_experts.down_proj.weight", 1),
}
# A layer's stacked expert weights [E, in, out]: expert j is `mlp.experts.{j}.<name>.weight`.
_EXPERT_STACKS = {("mlp", "gate_proj"), ("mlp", "up_proj"), ("mlp", "down_proj")}
_TOP = {
  ("fc",): ("fc.weight", 1),
  ("hidden_norm", "scale"): ("hidden_norm.weight", 0),
  ("final_norm", "scale"): ("norm.weight", 0),
  ("markov_head", "markov_w1"): ("markov_head.markov_w1.weight", 0),  # an embedding table
  ("markov_head", "markov_w2"): ("markov_head.markov_w2.weight", 1),
  ("markov_head", "gate_kernel"): ("markov_head.gate_proj.weight", 1),
  ("markov_head", "gate_bias"): ("markov_head.gate_proj.bias", 0),
  ("markov_head", "joint_kernel"): ("markov_head.joint_proj.weight", 1),
  ("markov_head", "joint_bias"): ("markov_head.joint_proj.bias", 0),
  ("confidence_head", "kernel"): ("confidence_head.proj.weight", 1),
  ("confidence_head", "bias"): ("confidence_head.proj.bias", 0),
}
# Eagle3's single layer keeps its parts at the top level of our tree.
_EAGLE_LAYER_ONLY = {("hidden_norm", "scale"): ("layers.0.hidden_norm.weight", 0)}


def _name_of(path: tuple[str, ...], eagle: bool) -> tuple[str, int]:
  if eagle:
    if path in _EAGLE_LAYER_ONLY:
      return _EAGLE_LAYER_ONLY[path]
    if path in _TOP:
      return _TOP[path]
    key = (
      ("attn", *path)
      if path[0] in ("q_proj", "k_proj", "v_proj", "o_proj", "q_norm", "k_norm")
      else path
    )
    name, n_in = _LAYER[key]
    return f"layers.0.{name}", n_in
  if path in _TOP:
    return _TOP[path]
  name, n_in = _LAYER[path[1:]]
  return f"layers.{int(path[0].removeprefix('layers_'))}.{name}", n_in


def _is_expert_stack(path: tuple[str, ...], ndim: int, eagle: bool) -> bool:
  return not eagle and ndim == 3 and path[1:] in _EXPERT_STACKS


def _expert_name(name: str, expert: int) -> str:
  """layers.i.mlp.gate_proj.weight -> layers.i.mlp.experts.{expert}.gate_proj.weight"""
  head, _, proj = name.rpartition(".mlp.")
  return f"{head}.mlp.experts.{expert}.{proj}"


def _to_torch(x: np.ndarray, n_in: int) -> np.ndarray:
  if n_in == 0:
    return np.asarray(x)
  return np.ascontiguousarray(np.asarray(x).reshape(math.prod(x.shape[:n_in]), -1).T)


def _from_torch(w: np.ndarray, shape: tuple[int, ...], n_in: int) -> np.ndarray:
  return np.asarray(w) if n_in == 0 else np.asarray(w).T.reshape(shape)


SHARED_TENSORS = ("embed_tokens.weight", "lm_head.weight")  # the target's, never trained
# Fitted STS temperatures (and Platt offsets) live beside the DeepSpec files, which have no
# field for them; a folder without it loads uncalibrated.
CALIBRATION_FILE = "calibration.json"


def write_calibration(
  folder: str | Path, temperatures, report: dict | None = None, offsets=None
) -> Path:
  """Stores per-slot STS temperatures (with Platt scaling also offsets, and the fit's report)
  with a drafter; `load_drafter` applies them to the confidence head."""
  path = Path(folder) / CALIBRATION_FILE
  record = {"confidence_temperatures": [float(t) for t in temperatures]}
  if offsets is not None:
    record["confidence_offsets"] = [float(b) for b in offsets]
  record.update(report or {})
  tmp = path.with_suffix(".json.tmp")
  tmp.write_text(json.dumps(record, indent=2) + "\n")
  tmp.replace(path)
  return path


def state_dict(drafter, params) -> dict[str, np.ndarray]:
  """DeepSpec tensors (torch layout, float32 numpy) of a drafter's params."""
  eagle = drafter.config.kind == "eagle3"
  out = {}
  for path, x in traverse_util.flatten_dict(params["trainable"]).items():
    name, n_in = _name_of(path, eagle)
    x = np.asarray(x, np.float32)
    if _is_expert_stack(path, x.ndim, eagle):
      out |= {_expert_name(name, j): _to_torch(x[j], 1) for j in range(x.shape[0])}
    else:
      out[name] = _to_torch(x, n_in)
  frozen = params["frozen"]
  if "draft_ids" in frozen:
    out |= _draft_vocab_tensors(drafter, out, np.asarray(frozen["draft_ids"]))
  out["embed_tokens.weight"] = np.asarray(frozen["embedding"], np.float32)
  head = frozen.get("lm_head")
  # safetensors writes an array's raw buffer: a transposed view must be made contiguous first.
  out["lm_head.weight"] = (
    out["embed_tokens.weight"]
    if head is None
    else np.ascontiguousarray(np.asarray(head, np.float32).T)
  )
  return out


def state_dict_shapes(drafter) -> dict[str, tuple[int, ...]]:
  """DeepSpec tensor shapes of a drafter, computed abstractly (no arrays allocated)."""
  eagle = drafter.config.kind == "eagle3"
  shapes = {}
  for path, x in traverse_util.flatten_dict(drafter.trainable_shapes()).items():
    name, n_in = _name_of(path, eagle)
    if _is_expert_stack(path, len(x.shape), eagle):
      shapes |= {_expert_name(name, j): x.shape[:0:-1] for j in range(x.shape[0])}
      continue
    shapes[name] = x.shape if n_in == 0 else (math.prod(x.shape[n_in:]), math.prod(x.shape[:n_in]))
  v, d = drafter.target.vocab_size, drafter.target.hidden_size
  shapes["embed_tokens.weight"] = shapes["lm_head.weight"] = (v, d)
  n = drafter.config.draft_vocab_size
  if n:
    shapes |= {D2T: (n,), T2D: (v,)}
    if W2 in shapes:
      shapes[W2] = (v, shapes[W2][1])
  return shapes


# A reduced draft vocabulary (`drafters.draft_vocab`) is stored the way EAGLE-3 checkpoints
# store theirs: `d2t` [N] int64 offsets (target id = i + d2t[i]) and `t2d` [V] bool, plus the
# config field `draft_vocab_size`. The sequential head's W2 is written at the full vocabulary,
# zero outside the N tokens. DeepSpec reads such a folder as a full-vocabulary drafter: transformers
# skips the two unknown tensors with a warning, and the extra config field is kept unread.
D2T, T2D, W2 = "d2t", "t2d", "markov_head.markov_w2.weight"


def _draft_vocab_tensors(drafter, torch_tensors: dict, ids: np.ndarray) -> dict:
  """d2t, t2d and the full-vocabulary W2 of a drafter with draft ids `ids` [N]."""
  v = drafter.target.vocab_size
  out = {
    D2T: (ids - np.arange(ids.size)).astype(np.int64),
    T2D: np.zeros(v, bool),
  }
  out[T2D][ids] = True
  if W2 in torch_tensors:
    w2 = torch_tensors[W2]  # [N, R]
    full = np.zeros((v, w2.shape[1]), np.float32)
    full[ids] = w2
    out[W2] = full
  return out


def read_draft_ids(cfg: dict[str, Any], get, vocab_size: int) -> np.ndarray | None:
  """The draft ids [N] a folder's d2t / t2d describe (None for a full-vocabulary drafter);
  CheckpointError when they are missing or disagree."""
  from dspark_jax.drafters.draft_vocab import check_draft_ids

  n = int(cfg.get("draft_vocab_size") or 0)
  if not n:
    return None
  d2t, t2d = get(D2T), get(T2D)
  if d2t is None or t2d is None:
    raise CheckpointError(f"config.json sets draft_vocab_size={n} but {D2T}/{T2D} are missing")
  ids = np.arange(d2t.size) + np.rint(d2t).astype(np.int64)
  mask = np.zeros(vocab_size, bool)
  try:
    ids = check_draft_ids(ids, vocab_size)
    mask[ids] = True
  except ValueError as e:
    raise CheckpointError(f"bad {D2T}: {e}") from None
  if ids.size != n or t2d.shape != (vocab_size,) or not np.array_equal(t2d > 0.5, mask):
    raise CheckpointError(
      f"{D2T} ({ids.size} ids) and {T2D} ({int((t2d > 0.5).sum())} set) do not describe the "
      f"same draft vocabulary of draft_vocab_size={n}"
    )
  return ids


# The transformers release whose config layout (`dtype`, `rope_parameters`) DeepSpec's released
# checkpoints follow; transformers reads the field only to warn about a version mismatch.
FORMAT_TRANSFORMERS_VERSION = "5.24.0"
# Qwen3Config's default, written when the target does not say how long its context is.
DEFAULT_MAX_POSITIONS = 32768
# DeepSpec's Eagle3 training settings (its config/eagle3 recipes); required fields of its config.
EAGLE3_TTT_LENGTH, EAGLE3_STEP_LOSS_DECAY = 7, 0.8
# Head names as DeepSpec's configs spell them (`markov_head_type`); ours call "vanilla" "markov".
_DEEPSPEC_HEAD = {"markov": "vanilla", "gated": "gated", "rnn": "rnn"}


def deepspec_config(drafter) -> dict[str, Any]:
  """The drafter's `config.json` exactly as DeepSpec writes one.

  DeepSpec's drafter config is a copy of its Qwen3 target's config with the drafter fields set
  (`build_draft_config`): `markov_head_type` only when `markov_rank` > 0, rank 0 for a drafter
  without a sequential head (DFlash), `confidence_head_with_markov` only with a confidence head,
  and `tie_word_embeddings` false (the folder always holds its own `lm_head.weight`). The test
  suite checks field for field against folders DeepSpec itself wrote.
  """
  c, t = drafter.config, drafter.target
  if t.gemma_style:
    raise CheckpointError("saving drafters of Gemma targets in DeepSpec format is not supported")
  rope = {"rope_theta": t.rope_theta, "rope_type": "default"}
  if t.rope_scaling_factor != 1.0:
    rope = {"factor": t.rope_scaling_factor, "rope_theta": t.rope_theta, "rope_type": "linear"}
  if t.rope_yarn is not None:  # transformers' yarn fields; drafters take RoPE from the target
    y = t.rope_yarn
    rope = {
      "attention_factor": y.attention_factor,
      "beta_fast": y.beta_fast,
      "beta_slow": y.beta_slow,
      "factor": y.factor,
      "original_max_position_embeddings": y.original_context,
      "rope_theta": t.rope_theta,
      "rope_type": "yarn",
      "truncate": y.truncate,
    }
  cfg: dict[str, Any] = {
    "architectures": [ARCHITECTURES[c.kind]],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": None,
    "dtype": "float32",
    "eos_token_id": None,
    "head_dim": t.head_dim,
    "hidden_act": "silu",
    "hidden_size": t.hidden_size,
    "initializer_range": 0.02,
    "intermediate_size": c.intermediate_size or t.intermediate_size,
    "layer_types": ["full_attention"] * c.num_layers,
    "max_position_embeddings": t.context_length or DEFAULT_MAX_POSITIONS,
    "max_window_layers": 28,
    "model_type": "qwen3",
    "num_attention_heads": t.num_heads,
    "num_hidden_layers": c.num_layers,
    "num_key_value_heads": t.num_kv_heads,
    "num_target_layers": t.num_layers,
    "pad_token_id": None,
    "rms_norm_eps": t.rms_eps,
    "rope_parameters": rope,
    "sliding_window": None,
    "target_layer_ids": list(c.target_layer_ids),
    "tie_word_embeddings": False,
    "transformers_version": FORMAT_TRANSFORMERS_VERSION,
    "use_cache": True,
    "use_sliding_window": False,
    "vocab_size": t.vocab_size,
  }
  if c.draft_vocab_size:
    cfg["draft_vocab_size"] = c.draft_vocab_size
  if c.context_window is not None:  # Qwen3's own fields for a sliding window on every layer
    cfg |= {
      "layer_types": ["sliding_attention"] * c.num_layers,
      "sliding_window": c.context_window,
      "use_sliding_window": True,
    }
  if c.moe is not None:  # our extension: DeepSpec's format has no MoE drafter
    cfg["moe"] = {
      k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(c.moe).items()
    }
  if c.kind == "eagle3":
    cfg |= {
      "block_size": c.block_size,  # ours: tokens per proposal (DeepSpec's eval sets it per run)
      "draft_num_hidden_layers": c.num_layers,
      "step_loss_decay": EAGLE3_STEP_LOSS_DECAY,
      "ttt_length": EAGLE3_TTT_LENGTH,
    }
    return dict(sorted(cfg.items()))
  cfg |= {
    "block_size": c.block_size,
    "enable_confidence_head": c.confidence_head,
    "markov_rank": c.markov_rank,
    "mask_token_id": c.mask_token_id,
    "num_anchors": c.num_anchors,
  }
  if c.head != "none":
    cfg["markov_head_type"] = _DEEPSPEC_HEAD[c.head]
  elif c.uses_token_table:
    # The confidence head reads W1 with no sequential head: DeepSpec has no such model (its
    # rank > 0 requires a head type), so this folder loads here but not in DeepSpec.
    warnings.warn(
      "a DSpark drafter with a confidence head on W1 but no sequential head has no DeepSpec "
      "equivalent; DeepSpec will refuse this folder",
      stacklevel=3,
    )
  if c.confidence_head:
    cfg["confidence_head_with_markov"] = c.confidence_with_markov
  return dict(sorted(cfg.items()))


def _drafter_kind(cfg: dict[str, Any], arch: str) -> str:
  if arch == "Qwen3Eagle3Model":
    return "eagle3"
  if "dspark_jax_kind" in cfg:  # folders written by dspark-jax before it wrote DeepSpec's config
    return str(cfg["dspark_jax_kind"])
  # DeepSpec: DFlash is the DSpark architecture with neither a sequential nor a confidence head.
  has_heads = int(cfg.get("markov_rank", 0)) > 0 or bool(cfg.get("enable_confidence_head"))
  return "dspark" if has_heads else "dflash"


def draft_config_from_deepspec(cfg: dict[str, Any], target: ModelConfig) -> DraftConfig:
  """DraftConfig of a DeepSpec config.json, checked against the target it will run on."""
  arch = (cfg.get("architectures") or ["?"])[0]
  if arch not in ("Qwen3DSparkModel", "Qwen3Eagle3Model"):
    raise CheckpointError(
      f"not a DeepSpec drafter folder: architecture {arch!r} (supported: Qwen3DSparkModel, "
      "Qwen3Eagle3Model)"
    )
  for field, want in [
    ("hidden_size", target.hidden_size),
    ("vocab_size", target.vocab_size),
    ("num_attention_heads", target.num_heads),
    ("num_key_value_heads", target.num_kv_heads),
    ("head_dim", target.head_dim),
  ]:
    got = cfg.get(field, want)
    if got != want:
      raise CheckpointError(
        f"drafter {field}={got} differs from the target's {want}: this drafter was made for "
        "another target model"
      )
  kind = _drafter_kind(cfg, arch)
  rank = int(cfg.get("markov_rank", 0))
  head = str(cfg.get("markov_head_type") or "none").lower() if rank > 0 else "none"
  if kind != "dspark":
    head = "none"
  width = int(cfg.get("intermediate_size", target.intermediate_size))
  try:
    return DraftConfig(
      kind=kind,
      block_size=int(cfg["block_size"]) if "block_size" in cfg else 7,
      num_layers=int(cfg.get("num_hidden_layers", 1)),
      target_layer_ids=tuple(int(i) for i in cfg.get("target_layer_ids", ())),
      mask_token_id=int(cfg.get("mask_token_id", 0)),
      head=head,
      markov_rank=rank,
      confidence_head=bool(cfg.get("enable_confidence_head", False)) and kind == "dspark",
      confidence_with_markov=bool(cfg.get("confidence_head_with_markov", True)),
      num_anchors=int(cfg.get("num_anchors", 512)),
      intermediate_size=width if width != target.intermediate_size else None,
      draft_vocab_size=int(cfg.get("draft_vocab_size") or 0),
      moe=_moe_config(cfg.get("moe")),
      context_window=int(cfg["sliding_window"]) if cfg.get("use_sliding_window") else None,
    )
  except (ValueError, KeyError, TypeError) as e:
    raise CheckpointError(f"bad drafter config.json: {e}") from None


def _moe_config(record: dict | None) -> MoEConfig | None:
  if record is None:
    return None
  fields = {f.name for f in dataclasses.fields(MoEConfig)}
  unknown = set(record) - fields
  if unknown:
    raise ValueError(f"unknown moe fields {sorted(unknown)}")
  return MoEConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in record.items()})


def trainable_from_state_dict(drafter, get) -> dict:
  """Our trainable params from DeepSpec-named torch-layout tensors (`get(name)` or None)."""
  eagle = drafter.config.kind == "eagle3"
  flat = {}
  for path, spec in traverse_util.flatten_dict(drafter.trainable_shapes()).items():
    name, n_in = _name_of(path, eagle)
    if _is_expert_stack(path, len(spec.shape), eagle):
      experts = [
        _read_tensor(get, _expert_name(name, j), spec.shape[1:], 1) for j in range(spec.shape[0])
      ]
      flat[path] = np.stack(experts)
    else:
      flat[path] = _read_tensor(get, name, spec.shape, n_in)
  return traverse_util.unflatten_dict(flat)


def _read_tensor(get, name: str, shape: tuple[int, ...], n_in: int) -> np.ndarray:
  """One param of shape `shape` from the torch-layout tensor `name`; CheckpointError if it is
  missing or shaped otherwise."""
  w = get(name)
  if w is None:
    raise CheckpointError(f"drafter checkpoint has no tensor {name!r}")
  want = shape if n_in == 0 else (math.prod(shape[n_in:]), math.prod(shape[:n_in]))
  if tuple(w.shape) != tuple(want):
    raise CheckpointError(f"{name} has shape {tuple(w.shape)}; expected {want}")
  return np.ascontiguousarray(_from_torch(w, shape, n_in), np.float32)


SAVE_DTYPES = ("float32", "bfloat16")


def save_drafter(
  path: str | Path, drafter, params, *, dtype: str = "float32", include_shared: bool = True
) -> Path:
  """Writes `config.json` + `model.safetensors` (written to a temporary name, then renamed).

  Args:
    dtype: "float32" or "bfloat16" (DeepSpec's own checkpoints are bf16).
    include_shared: also write the target's embedding and LM head, as DeepSpec does. Without
      them the folder is smaller and `load_drafter` takes both from the target.
  """
  if dtype not in SAVE_DTYPES:
    raise ValueError(f"dtype must be one of {SAVE_DTYPES}, got {dtype!r}")
  folder = Path(path)
  folder.mkdir(parents=True, exist_ok=True)
  config = deepspec_config(drafter) | {"dtype": dtype}
  tensors = state_dict(drafter, params)
  if not include_shared:
    tensors = {k: v for k, v in tensors.items() if k not in SHARED_TENSORS}
  tmp = folder / "model.safetensors.tmp"
  from safetensors.numpy import save_file

  if dtype == "bfloat16":
    import ml_dtypes  # jax's own bfloat16; the draft-vocabulary maps stay integer / bool

    tensors = {
      k: v.astype(ml_dtypes.bfloat16) if v.dtype == np.float32 else v for k, v in tensors.items()
    }
  save_file(tensors, str(tmp))
  tmp.replace(folder / "model.safetensors")
  (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
  return folder


def check_drafter_folder(path: str | Path) -> Path:
  """The folder, if it exists and has a config.json (cheap: callers run it before loading a
  model); CheckpointError otherwise."""
  folder = Path(path)
  if not folder.is_dir():
    raise CheckpointError(f"drafter folder not found: {folder}")
  if not (folder / "config.json").is_file():
    raise CheckpointError(f"{folder} is not a DeepSpec drafter folder: it has no config.json")
  return folder


def load_drafter(path: str | Path, target: ModelConfig, target_params):
  """(drafter, params) from a DeepSpec folder; the frozen parts are the target's own arrays.

  Raises:
    CheckpointError: missing/corrupt files, an unsupported architecture, or a drafter made for
      a different target (width, vocabulary, heads, layer ids).
  """
  folder = check_drafter_folder(path)
  cfg = read_config_json(folder)
  config = draft_config_from_deepspec(cfg, target)
  get = tensor_getter(folder)
  calibration = folder / CALIBRATION_FILE
  if calibration.is_file():
    record = json.loads(calibration.read_text())
    temps = record.get("confidence_temperatures", [])
    offsets = record.get("confidence_offsets", [])
    try:
      config = dataclasses.replace(
        config,
        confidence_temperatures=tuple(map(float, temps)),
        confidence_offsets=tuple(map(float, offsets)),
      )
    except ValueError as e:
      raise CheckpointError(f"{calibration}: {e}") from None
  try:
    drafter = make_drafter(config, target)
  except ValueError as e:
    raise CheckpointError(f"drafter in {folder} cannot run on this target: {e}") from None
  draft_ids = read_draft_ids(cfg, get, target.vocab_size)
  trainable = trainable_from_state_dict(drafter, _draft_space_getter(get, draft_ids))
  unused = sorted(get.names - set(state_dict_shapes(drafter)))
  if unused:
    raise CheckpointError(
      f"{folder} holds {len(unused)} tensors this {config.kind} drafter does not use "
      f"({', '.join(unused[:5])}{', ...' if len(unused) > 5 else ''}): its config.json does not "
      "describe its weights"
    )
  embedding = get("embed_tokens.weight")
  if embedding is not None:
    mine = np.asarray(target_params["embedding"], np.float32)
    if embedding.shape != mine.shape:
      raise CheckpointError(
        f"drafter embedding {embedding.shape} differs from the target's {mine.shape}"
      )
    # Quantised targets (GGUF) differ slightly from the drafter's copy; a large gap means the
    # drafter was trained for another model with the same shapes.
    gap = float(np.abs(embedding - mine).mean() / max(np.abs(mine).mean(), 1e-12))
    if gap > 0.05:
      warnings.warn(
        f"drafter embedding differs from the target's by {gap:.1%} on average: was it trained "
        "for this target?",
        stacklevel=2,
      )
  params = {
    "trainable": jax.tree.map(np.asarray, trainable),
    "frozen": draft_frozen(target_params, target, draft_ids),
  }
  return drafter, params


def _draft_space_getter(get, draft_ids):
  """`get` with W2 cut to the draft vocabulary's rows (it is stored at the full vocabulary)."""
  if draft_ids is None:
    return get

  def cut(name):
    w = get(name)
    return w[draft_ids] if name == W2 and w is not None else w

  return cut


def open_drafter(
  source: str, target: ModelConfig, target_params, *, ngram_len: int = 7, verify_slots=None
):
  """(drafter, params) of `source`: a DeepSpec drafter folder, or "ngram" (the prompt-lookup
  drafter with G = ngram_len, no params). With `verify_slots` G, the proposals are cut to their
  first G slots (`drafters.prefix.PrefixDrafter`).

  Raises:
    CheckpointError: as `load_drafter`. ValueError: a bad `verify_slots`.
  """
  from dspark_jax.drafters.ngram import NgramDrafter
  from dspark_jax.drafters.prefix import PrefixDrafter

  if source == "ngram":
    drafter, params = NgramDrafter(ngram_len, target.vocab_size), None
  else:
    drafter, params = load_drafter(source, target, target_params)
  return (drafter if verify_slots is None else PrefixDrafter(drafter, verify_slots)), params
