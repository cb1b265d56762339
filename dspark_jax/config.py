"""Frozen configuration dataclasses and `key=value` command-line overrides.

Configs are static data: they are hashable so jitted functions can take them as static
arguments, and every field that changes a compiled shape or code path lives here.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

from dspark_jax.rope_scaling import YarnRope

Family = Literal["llama", "qwen3", "gemma3"]
FAMILIES: tuple[str, ...] = ("llama", "qwen3", "gemma3")


Router = Literal["softmax", "sigmoid"]


@dataclasses.dataclass(frozen=True)
class MoEConfig:
  """Routed experts in place of the dense MLP (`models/moe.py`).

  softmax (Qwen3-MoE): top-k of softmax(router logits), optionally renormalised over the k.
  sigmoid (DeepSeek-V3): sigmoid scores; experts are chosen by score + a learned correction
  bias, within the `groups_per_token` best of `num_groups` expert groups (a group's strength:
  the sum of its two best biased scores); the weights are the unbiased scores, optionally
  renormalised, times `routed_scale`.
  """

  num_experts: int
  experts_per_token: int
  expert_size: int  # each expert's MLP width (HF moe_intermediate_size)
  router: Router = "softmax"
  normalize_weights: bool = True  # HF norm_topk_prob
  num_groups: int = 1  # HF n_group
  groups_per_token: int = 1  # HF topk_group
  routed_scale: float = 1.0  # HF routed_scaling_factor
  num_shared_experts: int = 0  # always-on experts of width expert_size each, summed into one MLP
  dense_layers: tuple[int, ...] = ()  # layers that keep the dense MLP (intermediate_size)

  def __post_init__(self):
    if self.router not in ("softmax", "sigmoid"):
      raise ValueError(f"router must be softmax or sigmoid, got {self.router!r}")
    if not 1 <= self.experts_per_token <= self.num_experts:
      raise ValueError(
        f"experts_per_token ({self.experts_per_token}) must be in [1, num_experts "
        f"({self.num_experts})]"
      )
    if self.num_experts % self.num_groups or not 1 <= self.groups_per_token <= self.num_groups:
      raise ValueError(
        f"num_experts ({self.num_experts}) must split into num_groups ({self.num_groups}) "
        f"groups and groups_per_token ({self.groups_per_token}) be in [1, num_groups]"
      )
    per_group = self.num_experts // self.num_groups
    if self.num_groups > 1 and (
      per_group < 2 or self.groups_per_token * per_group < self.experts_per_token
    ):
      raise ValueError(
        "group-limited routing needs at least 2 experts per group and enough experts in the "
        "chosen groups for experts_per_token"
      )


@dataclasses.dataclass(frozen=True)
class MLAConfig:
  """Multi-head latent attention (DeepSeek-V2/V3, `models/mla.py`) in place of GQA.

  Queries: x -> (optionally a rank-`q_lora_rank` bottleneck with an RMSNorm) -> per head
  `qk_nope_head_dim` content dims and `qk_rope_head_dim` rotary dims. Keys and values: x -> a
  `kv_lora_rank` latent (RMSNorm'd) plus one shared `qk_rope_head_dim` rotary key; per head the
  content key and the value are linear maps of the latent. The cache holds only the latent and
  the rotary key per token.
  """

  kv_lora_rank: int
  qk_nope_head_dim: int
  qk_rope_head_dim: int
  v_head_dim: int
  q_lora_rank: int | None = None  # None: a full-rank query projection
  # Multiplies 1/sqrt(qk_nope + qk_rope): with scaled RoPE DeepSeek rescales every score by
  # yarn_mscale(factor, mscale_all_dim)^2, the non-rotary dims' share included.
  score_multiplier: float = 1.0

  def __post_init__(self):
    if self.qk_rope_head_dim % 2:
      raise ValueError(f"qk_rope_head_dim must be even, got {self.qk_rope_head_dim}")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """A decoder-only target model.

  The three supported families differ only in switches below:
    llama  (SmolLM2): pre-norm blocks, SiLU-gated MLP.
    qwen3:  llama plus RMSNorm on each query/key head before RoPE (`qk_norm`).
    gemma3: qk-norm, sandwich norms around attention and MLP, norm weights stored as w with
            (1 + w) applied, embeddings scaled by sqrt(hidden), GELU(tanh) MLP, alternating
            sliding-window (local RoPE base) and global layers, optional logit soft-capping.
  """

  family: Family
  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  rms_eps: float = 1e-6
  rope_theta: float = 10000.0
  # Linear RoPE position scaling on global layers (Gemma 3 4B+ use 8.0); 1.0 means none.
  rope_scaling_factor: float = 1.0
  # YaRN scaling on global layers instead (DeepSeek-V3); None means none.
  rope_yarn: YarnRope | None = None
  # RoPE base on sliding-window layers (Gemma 3: 10000); None -> rope_theta.
  rope_local_theta: float | None = None
  # Per-layer sliding window in tokens (a query sees keys with q - k < window); None = global.
  # Empty tuple means every layer is global.
  layer_windows: tuple[int | None, ...] = ()
  # Attention scores are q.k * query_scale; None -> head_dim ** -0.5.
  query_scale: float | None = None
  attn_logit_softcap: float | None = None
  final_logit_softcap: float | None = None
  tie_embeddings: bool = True
  dtype: str = "float32"
  # Longest sequence (prompt + generated tokens) the model was trained for, from the GGUF's
  # `<arch>.context_length` or HF's `max_position_embeddings`; None = unknown (not enforced).
  context_length: int | None = None
  # Routed experts (Qwen3-MoE, DeepSeek-V3 routing); None = a dense MLP in every layer.
  moe: MoEConfig | None = None
  # Multi-head latent attention (DeepSeek-V3); None = grouped-query attention. With it,
  # head_dim is the rotary part's width (qk_rope_head_dim, HF's head_dim for these models).
  mla: MLAConfig | None = None

  def __post_init__(self):
    if self.rope_yarn is not None and self.rope_scaling_factor != 1.0:
      raise ValueError("rope_yarn and a linear rope_scaling_factor exclude each other")
    if self.mla is not None and (self.head_dim != self.mla.qk_rope_head_dim or self.qk_norm):
      raise ValueError(
        "with mla, head_dim must equal mla.qk_rope_head_dim and the family be llama-style"
      )
    if self.family not in FAMILIES:
      raise ValueError(f"unsupported model family {self.family!r}; supported: {FAMILIES}")
    if self.num_heads % self.num_kv_heads:
      raise ValueError(
        f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})"
      )
    if self.layer_windows and len(self.layer_windows) != self.num_layers:
      raise ValueError(
        f"layer_windows has {len(self.layer_windows)} entries for {self.num_layers} layers"
      )

  @property
  def qk_norm(self) -> bool:
    return self.family in ("qwen3", "gemma3")

  @property
  def gemma_style(self) -> bool:
    """Sandwich norms, (1 + w) norm weights, scaled embeddings, GELU."""
    return self.family == "gemma3"

  @property
  def scale(self) -> float:
    if self.query_scale is not None:
      return self.query_scale
    if self.mla is not None:
      width = self.mla.qk_nope_head_dim + self.mla.qk_rope_head_dim
      return width**-0.5 * self.mla.score_multiplier
    return self.head_dim**-0.5

  @property
  def cache_dims(self) -> tuple[int, int, int]:
    """(heads, key width, value width) of one layer's cache arrays [B, heads, S, width]: the
    KV heads for GQA; for MLA one shared "head" holding the latent (as keys) and the rotary key
    (as values)."""
    if self.mla is not None:
      return 1, self.mla.kv_lora_rank, self.mla.qk_rope_head_dim
    return self.num_kv_heads, self.head_dim, self.head_dim

  def is_moe(self, layer: int) -> bool:
    return self.moe is not None and layer not in self.moe.dense_layers

  def window(self, layer: int) -> int | None:
    return self.layer_windows[layer] if self.layer_windows else None

  @property
  def rope_scaling(self) -> float | YarnRope:
    """The global layers' RoPE scaling: a linear factor or a YaRN scaling."""
    return self.rope_yarn or self.rope_scaling_factor

  def rope(self, layer: int) -> tuple[float, float | YarnRope]:
    """(base, scaling: a linear factor or YaRN) of RoPE on `layer`."""
    if self.window(layer) is not None and self.rope_local_theta is not None:
      return self.rope_local_theta, 1.0
    return self.rope_theta, self.rope_scaling


DrafterKind = Literal["dspark", "dflash", "eagle3"]
HeadKind = Literal["markov", "gated", "rnn", "none"]
DRAFTER_KINDS: tuple[str, ...] = ("dspark", "dflash", "eagle3")
HEAD_KINDS: tuple[str, ...] = ("markov", "gated", "rnn", "none")
# DeepSpec's configs call the plain Markov head "vanilla"; both spellings are accepted.
HEAD_ALIASES = {"vanilla": "markov"}


@dataclasses.dataclass(frozen=True)
class DraftConfig:
  """A trained drafter (DSpark, DFlash or Eagle3); its width, heads and RoPE are the target's.

  Defaults are DeepSpec's (see `docs/method.md` section 2). `block_size` is G, the number
  of draft tokens per round: the parallel block holds the anchor and G - 1 mask tokens, and slot
  k predicts the token k + 1 positions after the anchor.
  """

  kind: DrafterKind = "dspark"
  block_size: int = 7
  num_layers: int = 5
  # Target layers whose raw outputs form the context features (-1: the embedding output).
  target_layer_ids: tuple[int, ...] = (1, 9, 17, 25, 33)
  mask_token_id: int = 0
  head: HeadKind = "markov"  # sequential head of DSpark; DFlash and Eagle3 have "none"
  markov_rank: int = 256
  confidence_head: bool = True
  confidence_with_markov: bool = True  # the confidence head also sees W1[x_{k-1}]
  num_anchors: int = 512  # anchor blocks per training sequence
  intermediate_size: int | None = None  # drafter MLP width; None -> the target's
  # Sequential Temperature Scaling of the confidence logits, one T per slot (() = none); fitted
  # by `dspark-jax calibrate` and stored beside the drafter (calibration.json).
  confidence_temperatures: tuple[float, ...] = ()
  # Sequential Platt scaling adds one offset per slot after the temperature: sigmoid(z / T + b)
  # (() = none; `dspark-jax calibrate --method platt`).
  confidence_offsets: tuple[float, ...] = ()
  # Reduced draft vocabulary (Eagle3's d2t/t2d idea): the drafter's logits cover only N target
  # tokens (rows of the target's own LM head, `drafters.draft_vocab`); 0 = the whole vocabulary.
  # Verification still scores the full vocabulary, so decoding stays lossless.
  draft_vocab_size: int = 0
  # V4-style backbone options (DSpark / DFlash): routed experts in place of each backbone
  # layer's dense MLP (`models/moe.py`; `moe.dense_layers` keep the dense one), and a sliding
  # context window: a block anchored at position a sees context positions s with
  # a - context_window < s < a (plus its whole own block). None = dense layers / full context.
  moe: MoEConfig | None = None
  context_window: int | None = None

  def __post_init__(self):
    if self.kind not in DRAFTER_KINDS:
      raise ValueError(f"unknown drafter kind {self.kind!r}; choose one of {DRAFTER_KINDS}")
    object.__setattr__(self, "head", HEAD_ALIASES.get(self.head, self.head))
    if self.head not in HEAD_KINDS:
      raise ValueError(
        f"unknown sequential head {self.head!r}; choose one of {HEAD_KINDS} "
        f"({', '.join(f'{a!r} = {b!r}' for a, b in HEAD_ALIASES.items())})"
      )
    if self.block_size < 1:
      raise ValueError(f"block_size must be >= 1, got {self.block_size}")
    if self.num_layers < 1:
      raise ValueError(f"a drafter needs at least one layer, got num_layers={self.num_layers}")
    if self.kind != "dspark" and (self.head != "none" or self.confidence_head):
      raise ValueError(
        f"{self.kind} has no sequential or confidence head: set head=none confidence_head=false"
      )
    if self.uses_token_table and self.markov_rank < 1:
      raise ValueError(f"markov_rank must be >= 1, got {self.markov_rank}")
    if not self.target_layer_ids:
      raise ValueError("target_layer_ids must name at least one target layer")
    temps = self.confidence_temperatures
    if temps and (len(temps) != self.block_size or min(temps) <= 0):
      raise ValueError(
        f"confidence_temperatures needs {self.block_size} positive values, got {list(temps)}"
      )
    if temps and not self.confidence_head:
      raise ValueError("confidence_temperatures need a confidence head")
    offsets = self.confidence_offsets
    if offsets and (len(offsets) != self.block_size or not all(map(math.isfinite, offsets))):
      raise ValueError(
        f"confidence_offsets needs {self.block_size} finite values, got {list(offsets)}"
      )
    if offsets and not self.confidence_head:
      raise ValueError("confidence_offsets need a confidence head")
    if self.draft_vocab_size < 0:
      raise ValueError(f"draft_vocab_size must be >= 0 (0 = full), got {self.draft_vocab_size}")
    if self.kind == "eagle3" and (self.moe is not None or self.context_window is not None):
      raise ValueError("moe and context_window are options of the DSpark/DFlash block backbone")
    if self.context_window is not None and self.context_window < 1:
      raise ValueError(f"context_window must be >= 1 (or None), got {self.context_window}")
    if self.moe is not None and any(not 0 <= i < self.num_layers for i in self.moe.dense_layers):
      raise ValueError(
        f"moe.dense_layers {list(self.moe.dense_layers)} name layers outside the drafter's "
        f"{self.num_layers}"
      )
    # Fields that do not apply take one canonical value, so equal configs are equal functions
    # (a DFlash drafter read back from a checkpoint that stores rank 0 equals the one saved).
    if not self.confidence_head:
      object.__setattr__(self, "confidence_with_markov", True)
    if not self.uses_token_table:
      object.__setattr__(self, "markov_rank", 0)

  @property
  def uses_token_table(self) -> bool:
    """Whether W1 (the [V, r] previous-token table) exists."""
    return self.head != "none" or (self.confidence_head and self.confidence_with_markov)

  def draft_vocab(self, target: ModelConfig) -> int:
    """N, the width of the drafter's logits on `target`."""
    return self.draft_vocab_size or target.vocab_size

  def check_target(self, target: ModelConfig) -> None:
    """Raises ValueError if this drafter cannot run on `target`."""
    ids = self.target_layer_ids
    last = target.num_layers - 1
    bad = [i for i in ids if not -1 <= i < last]
    if bad:
      raise ValueError(
        f"target_layer_ids {list(bad)} out of range for a {target.num_layers}-layer target: "
        f"valid ids are -1 (embedding output) to {last - 1}; the last layer ({last}) is not "
        "allowed (its output is what the drafter is trained to predict)"
      )
    if any(b <= a for a, b in zip(ids, ids[1:], strict=False)):
      raise ValueError(f"target_layer_ids must be strictly increasing, got {list(ids)}")
    if self.draft_vocab_size > target.vocab_size:
      raise ValueError(
        f"draft_vocab_size {self.draft_vocab_size} exceeds the target vocabulary "
        f"({target.vocab_size})"
      )
    if not 0 <= self.mask_token_id < target.vocab_size:
      raise ValueError(
        f"mask_token_id {self.mask_token_id} is outside the target vocabulary "
        f"(size {target.vocab_size})"
      )

  def backbone_config(self, target: ModelConfig) -> ModelConfig:
    """The drafter's own layers: Qwen3-style (pre-norm, q/k norm, SiLU) at the target's width.

    The layer style is the DeepSpec drafter's whatever the target family is; what comes from
    the target are the width, heads, head size and RoPE (global base and scaling), so drafter
    positions rotate exactly like the target's.
    """
    return ModelConfig(
      family="qwen3",
      vocab_size=target.vocab_size,
      hidden_size=target.hidden_size,
      intermediate_size=self.intermediate_size or target.intermediate_size,
      num_layers=self.num_layers,
      num_heads=target.num_heads,
      num_kv_heads=target.num_kv_heads,
      head_dim=target.head_dim,
      rms_eps=target.rms_eps,
      rope_theta=target.rope_theta,
      rope_scaling_factor=target.rope_scaling_factor,
      rope_yarn=target.rope_yarn,
      query_scale=target.query_scale,
      tie_embeddings=target.tie_embeddings,
      dtype=target.dtype,
      moe=self.moe,
    )


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """A drafter training run (DeepSpec's defaults unless noted); see `configs/`."""

  draft: DraftConfig = DraftConfig()
  target: str = "smollm2-135m"  # bundled name, .gguf file or HF folder
  # Regeneration JSONL (`dspark-jax regenerate`); several, comma-separated, are concatenated.
  regenerated: str = ""
  # Tensorstore cache folder (several, comma-separated, are read as one); "" = online mode.
  feature_cache: str = ""
  out_dir: str = "runs/drafter"
  max_seq_len: int = 1024
  batch_size: int = 8  # sequences per step (global)
  epochs: float = 10.0
  max_steps: int = 0  # > 0 stops earlier
  learning_rate: float = 6e-4
  warmup_fraction: float = 0.04
  weight_decay: float = 0.0
  grad_clip: float = 1.0
  adam_b1: float = 0.9
  adam_b2: float = 0.999
  adam_eps: float = 1e-8
  anchor_chunk: int = 64  # anchor blocks per loss chunk (memory bound)
  # Recompute each loss chunk in the backward pass (memory bounded by one chunk); False keeps
  # them all, as much memory as the unchunked loss, for about a third less LM-head work.
  remat_loss: bool = True
  eagle3_steps: int = 7  # training-time-test steps
  # Start the drafter's final-norm scale at the target's instead of at 1. The norm fixes the RMS
  # of the hidden state the shared LM head reads, so it bounds how sharp the drafter's
  # distributions can be; SmolLM2's is about 1.8 and Adam moves a weight by about the learning
  # rate per step, so from 1 a short run never gets there. An init only; DeepSpec starts at 1.
  final_norm_from_target: bool = False
  # Answer files (regeneration format, comma-separated) whose token counts choose a reduced
  # draft vocabulary; "" = the training answers. A larger corpus than the training set ranks the
  # rarer tokens better (a small training set may not even hold N distinct tokens).
  draft_vocab_source: str = ""
  # Start DSpark/DFlash's draft layers as copies of the target's top layers (the last
  # `draft.num_layers`; attention, MLP and norms, q/k norms at 1) instead of at random. Not
  # DeepSpec's; an init only.
  init_layers_from_target: bool = False
  # Train W_c on features divided by their per-dimension RMS; the saved drafter is the same
  # function with the scale folded into W_c (training/feature_scale.py). Not DeepSpec's.
  precondition_features: bool = False
  seed: int = 42
  log_every: int = 10
  checkpoint_every: int = 100
  keep_checkpoints: int = 2
  # The trained drafter is written to out_dir/drafter in DeepSpec's format.
  save_dtype: str = "bfloat16"  # or "float32"
  save_shared: bool = True  # write the target's embedding/LM head too, as DeepSpec does

  def __post_init__(self):
    for name in ("max_seq_len", "batch_size", "anchor_chunk", "eagle3_steps", "log_every"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
    if self.checkpoint_every < 1:
      raise ValueError(f"checkpoint_every must be >= 1, got {self.checkpoint_every}")
    if self.epochs <= 0 and self.max_steps <= 0:
      raise ValueError("set epochs > 0 or max_steps > 0")
    if not 0.0 <= self.warmup_fraction < 1.0:
      raise ValueError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
    if self.learning_rate <= 0:
      raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
    if self.save_dtype not in ("float32", "bfloat16"):
      raise ValueError(f"save_dtype must be float32 or bfloat16, got {self.save_dtype!r}")


def gemma3_layer_windows(num_layers: int, window: int, pattern: int = 6) -> tuple[int | None, ...]:
  """Gemma 3's layout: every `pattern`-th layer is global, the others slide over `window`."""
  return tuple(None if (i + 1) % pattern == 0 else window for i in range(num_layers))


def _parse_value(text: str, current: Any) -> Any:
  """Parses a command-line value with the type of the field it replaces."""
  if isinstance(current, bool):
    if text.lower() in ("1", "true", "yes", "on"):
      return True
    if text.lower() in ("0", "false", "no", "off"):
      return False
    raise ValueError(f"expected a boolean, got {text!r}")
  if isinstance(current, int):
    return int(text)
  if isinstance(current, float):
    value = float(text)
    if not math.isfinite(value):
      raise ValueError(f"expected a finite number, got {text!r}")
    return value
  if isinstance(current, tuple):
    return tuple(int(v) for v in text.strip("()[]").split(",") if v.strip())
  if text.lower() == "none":
    return None
  if current is None:  # an optional field unset so far (`intermediate_size`, `context_window`)
    try:
      return int(text)
    except ValueError:
      pass
  return text


def override(config: Any, assignments: list[str]) -> Any:
  """Returns `config` with `key=value` assignments applied (nested keys with dots).

  Raises:
    ValueError: on a malformed assignment or an unknown key (with the valid keys listed).
  """
  for item in assignments:
    key, sep, text = item.partition("=")
    if not sep:
      raise ValueError(f"override {item!r} is not of the form key=value")
    config = _override_one(config, key.split("."), text)
  return config


# Fields whose value is a config dataclass that may be None (so its type cannot be read off
# the current value): `draft.moe=num_experts:8,experts_per_token:2,expert_size:64` builds one
# from `field:value` pairs, `draft.moe=none` removes it, `draft.moe.router=sigmoid` edits it.
_NESTED_OPTIONAL = {("DraftConfig", "moe"): MoEConfig}


def _parse_dataclass(cls, text: str):
  fields = {f.name: f for f in dataclasses.fields(cls)}
  defaults = {n: f.default for n, f in fields.items() if f.default is not dataclasses.MISSING}
  values = {}
  for item in filter(None, (p.strip() for p in text.split(","))):
    name, sep, value = item.partition(":")
    if not sep or name not in fields:
      raise ValueError(
        f"{cls.__name__} values are name:value pairs separated by commas; {item!r} is not "
        f"one (names: {list(fields)})"
      )
    # Numbers by their look when the field has no default to take the type from.
    current = defaults.get(name, 0)
    values[name] = _parse_value(value.replace(";", ","), current)
  try:
    return cls(**values)
  except TypeError as e:
    raise ValueError(f"bad {cls.__name__}: {e}") from None


def _override_one(config: Any, path: list[str], text: str) -> Any:
  names = [f.name for f in dataclasses.fields(config)]
  head = path[0]
  if head not in names:
    raise ValueError(f"unknown config key {head!r} for {type(config).__name__}; valid: {names}")
  current = getattr(config, head)
  nested = _NESTED_OPTIONAL.get((type(config).__name__, head))
  if len(path) > 1:
    if current is None:
      raise ValueError(
        f"{head} is None: set it first ({head}=name:value,...) before editing {'.'.join(path)}"
      )
    return dataclasses.replace(config, **{head: _override_one(current, path[1:], text)})
  if nested is not None:
    value = None if text.lower() == "none" else _parse_dataclass(nested, text)
    return dataclasses.replace(config, **{head: value})
  return dataclasses.replace(config, **{head: _parse_value(text, current)})


def load_config_file(path: str, assignments: list[str]) -> Any:
  """`get_config(**kwargs)` of a Python config file, then `key=value` overrides.

  Assignments whose key is a parameter of `get_config` (say `drafter=dflash`, `variant=smoke`)
  choose the config; the others override its fields (`batch_size=4`, `draft.num_layers=3`).

  Raises:
    ValueError: a missing file, no `get_config`, or a malformed/unknown assignment.
  """
  import importlib.util
  import inspect
  from pathlib import Path

  file = Path(path)
  if not file.is_file():
    raise ValueError(f"config file {path} does not exist")
  spec = importlib.util.spec_from_file_location(f"_dspark_config_{file.stem}", file)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ValueError(f"{path} has no get_config()")
  names = set(inspect.signature(module.get_config).parameters)
  chosen, rest = {}, []
  for item in assignments:
    key, sep, value = item.partition("=")
    if not sep:
      raise ValueError(f"override {item!r} is not of the form key=value")
    if key in names:
      chosen[key] = value
    else:
      rest.append(item)
  return override(module.get_config(**chosen), rest)
