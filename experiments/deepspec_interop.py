"""Drafter folders saved by dspark-jax, loaded and run by DeepSeek's own PyTorch DeepSpec code.

    git clone https://github.com/deepseek-ai/DeepSpec /tmp/deepspec
    git -C /tmp/deepspec checkout afdfa7c
    python experiments/deepspec_interop.py --deepspec /tmp/deepspec \\
      --deepspec-commit afdfa7c9382a3341a3e6f17756dd816da79f132c --out results/deepspec_interop

For each drafter kind (DSpark with the vanilla Markov, gated and RNN heads, and DFlash) and for
the untied fixture target (tests/io/data/deepspec_fixture/target) and a tied variant of it
(`tie_embeddings=True`, no `lm_head` in the params), a drafter with random weights (norms and
biases too) is saved with `dspark_jax.io.deepspec.save_drafter` (float32, with the embedding and
LM head) and the folder, unedited, is loaded with DeepSpec's `Qwen3DSparkModel.from_pretrained`.
DeepSpec is imported from `--deepspec` (a checkout; nothing of it is in this repository).

Inputs are the fixture's: 20 tokens, the block at anchor 9, the training anchors [2, 5, 9, 13].
Features are the target's hidden states from transformers' `AutoModelForCausalLM` (float32,
eager), concatenated with DeepSpec's `extract_context_feature`; both sides get the same array.
(The tied variant's hidden states are the untied ones: tying changes only the LM head.) The
features of dspark-jax's own target forward are compared with them too.

DeepSpec side, as its evaluator and trainer call it:
  - block: `_forward_backbone(..., attention_mask=None, is_causal=False)` on [token 9, mask x 4]
    with the context features of positions 0..8 and no KV cache (eager attention), then
    `compute_logits` -> block logits; `markov_head.apply_block_logits` teacher-forced with
    [token 9, tokens 10..13] -> corrected logits; `predict_confidence_step` on the same
    previous tokens -> confidence logits; `sample_draft_tokens` at temperature 0 -> greedy
    tokens and the logits they were drawn from.
  - evaluator: `forward_dspark_draft_block` with a `DynamicCache` then `build_dspark_proposal`
    (sdpa attention, as `Qwen3DSparkEvaluator`): tokens and confidence of a greedy proposal.
    The cache maps DeepSpec's `crop(n)`, n > 0 (transformers 5.10.2, which DeepSpec pins) onto
    transformers 5.24's `crop(-k)`, which refuses positive values.
  - training: `Qwen3DSparkModel.forward` (flex_attention and DeepSpec's DSpark block mask) with
    its anchor sampler replaced at run time by the fixed anchors (all kept); the backbone output
    is read with a forward hook on the final norm for the block logits before the head.
dspark-jax side: `train_forward`, `init_state` + `propose_forced` / `propose` (greedy), as
tests/io/test_deepspec_fixture.py. The harness itself is first checked on the fixture's
DeepSpec-written folders against the outputs DeepSpec recorded (reference_outputs.npz).

Float32 rounding grows with the size of the logits, so both float32 results are also compared
with DeepSpec run in float64 on the same (exactly upcast) weights and features, sdpa attention
and its DSpark training mask made dense (flex_attention on CPU has no float64): where dspark-jax
is no further from that than DeepSpec's own float32 run (within `ROUNDING_FACTOR`), a gap is
rounding, not a difference in the format.

Writes `<out>/interop.json`: per kind x tie the max abs difference of each quantity (and its
ratio to the largest |value|), the float64 distances, whether the greedy tokens are equal, what
transformers said while loading (missing / unexpected / mismatched keys, log records, warnings;
plus a control: an edited copy must be caught), whether DeepSpec's loaded weights are the saved
tensors bit for bit, and the versions (torch, transformers, jax, DeepSpec commit and the git blob
ids of the DeepSpec files used). `pass` is the strict test (every max abs <= 1e-5, tokens equal,
loads clean, weights bit-identical); `pass_up_to_float32_rounding` accepts a larger gap that the
float64 check shows is rounding. Runs in about a minute on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import io
import json
import logging
import platform
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "io" / "data" / "deepspec_fixture"
KINDS = ("vanilla", "gated", "rnn", "dflash")  # DeepSpec's names; "vanilla" is our "markov"
OUR_HEAD = {"vanilla": "markov", "gated": "gated", "rnn": "rnn", "dflash": "none"}
TOL = 1e-5
# "float32 rounding only": dspark-jax's distance to float64 DeepSpec is at most this times
# DeepSpec's own float32 distance to it (+ 1e-6).
ROUNDING_FACTOR = 2.0
# DeepSpec files whose git blob ids are recorded (checkable against its commit's tree).
DEEPSPEC_FILES = (
  "deepspec/modeling/dspark/qwen3/modeling.py",
  "deepspec/modeling/dspark/markov_head.py",
  "deepspec/modeling/dspark/common.py",
  "deepspec/eval/dspark/draft_ops.py",
)


def git_blob_id(path: Path) -> str:
  data = path.read_bytes()
  return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def deepspec_commit(path: Path, given: str | None) -> str:
  """HEAD of the checkout at `path` (only if `path` is the top of a git work tree), else `given`."""
  try:
    out = subprocess.run(
      ["git", "-C", str(path), "rev-parse", "--show-toplevel", "HEAD"],
      capture_output=True,
      text=True,
      check=True,
    ).stdout.split()
    if Path(out[0]).resolve() == path.resolve():
      return out[1]
  except (OSError, subprocess.CalledProcessError, IndexError):
    pass
  return given or "unknown (not a git checkout; pass --deepspec-commit)"


def randomize(tree, seed: int, scale: float = 0.3):
  """N(0, scale^2) noise on every leaf, so norms, biases and heads are non-trivial (the same as
  tests/tiny_drafters.py)."""
  leaves, treedef = jax.tree.flatten(tree)
  rng = np.random.default_rng(seed)
  noisy = [x + scale * rng.standard_normal(x.shape).astype(np.float32) for x in leaves]
  return jax.tree.unflatten(treedef, noisy)


def draft_config(kind: str):
  from dspark_jax.config import DraftConfig

  dspark = kind != "dflash"
  return DraftConfig(
    kind="dspark" if dspark else "dflash",
    block_size=5,
    num_layers=2,
    target_layer_ids=(-1, 2, 4),
    mask_token_id=511,
    head=OUR_HEAD[kind],
    markov_rank=16,
    confidence_head=dspark,
    num_anchors=4,
  )


def diff(a, b) -> dict:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  assert a.shape == b.shape, (a.shape, b.shape)
  d = np.abs(a - b)
  return {
    "max_abs": float(d.max()),
    # float32 rounding grows with the values: the error relative to the largest one.
    "max_abs_over_max_magnitude": float(d.max() / max(np.abs(b).max(), 1e-30)),
    "max_magnitude": float(np.abs(b).max()),
  }


# ---------------------------------------------------------------------------------------------
# DeepSpec side.


@contextlib.contextmanager
def capture_loading():
  """Collects transformers' log records (WARNING and up), Python warnings and stderr."""
  import transformers

  records: list[str] = []

  class Keep(logging.Handler):
    def emit(self, record):
      records.append(f"{record.levelname} {record.name}: {record.getMessage()}")

  handler = Keep(level=logging.WARNING)
  logger = transformers.utils.logging.get_logger()  # the "transformers" root logger
  logger.addHandler(handler)
  err = io.StringIO()
  seen: dict = {"log": records}
  try:
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stderr(err):
      warnings.simplefilter("always")
      yield seen
  finally:
    logger.removeHandler(handler)
  seen["warnings"] = [f"{w.category.__name__}: {w.message}" for w in caught]
  # tqdm's "Loading weights" bar goes to stderr; keep any other line.
  seen["stderr"] = [
    line
    for line in err.getvalue().replace("\r", "\n").splitlines()
    if line.strip() and not line.lstrip().startswith("Loading weights")
  ]


def deepspec_load(folder: Path, attn: str, dtype=None):
  """DeepSpec's model from an unedited folder, and what transformers reported while loading."""
  import torch
  from deepspec.modeling.dspark.qwen3 import Qwen3DSparkModel

  dtype = dtype or torch.float32

  with capture_loading() as seen:
    model, info = Qwen3DSparkModel.from_pretrained(
      str(folder), attn_implementation=attn, dtype=dtype, output_loading_info=True
    )
  report = {k: sorted(map(str, v)) for k, v in info.items()}
  report |= {k: seen[k] for k in ("log", "warnings", "stderr")}
  words = ("missing", "unexpected", "mismatch", "newly initialized", "not used", "not initialized")
  text = " ".join(report["log"] + report["warnings"] + report["stderr"]).lower()
  report["clean"] = not (
    any(report[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"))
    or any(w in text for w in words)
  )
  return model.eval(), report


def deepspec_weights_are_the_files(model, folder: Path) -> dict:
  """Whether every parameter DeepSpec holds is the saved tensor, bit for bit (nothing
  re-initialised, re-tied or cast on the way in)."""
  from safetensors.numpy import load_file

  saved = load_file(folder / "model.safetensors")
  state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
  skipped = sorted(k for k in state if k not in saved)  # buffers such as rotary inv_freq
  return {
    "same_names": sorted(saved) == sorted(k for k in state if k in saved),
    "extra_in_model": skipped,
    "bit_identical": all(np.array_equal(state[k], saved[k]) for k in saved if k in state),
    "dtypes": sorted({str(v.dtype) for v in state.values()}),
  }


def deepspec_block(model, tokens, feats, a: int) -> dict:
  """The inference block at anchor `a` with no KV cache, as the fixture's README describes."""
  import torch

  g = model.block_size
  ids = torch.full((1, g), int(model.mask_token_id), dtype=torch.long)
  ids[:, 0] = tokens[:, a]
  with torch.no_grad():
    hidden = model._forward_backbone(
      target_hidden_states=feats[:, :a],
      noise_embedding=model.embed_tokens(ids),
      position_ids=torch.arange(a + g)[None],
      attention_mask=None,
      past_key_values=None,
      use_cache=False,
      is_causal=False,
    )
    base = model.compute_logits(hidden)  # [1, G, V]
    prev = tokens[:, a : a + g]  # [token a, tokens a+1 .. a+G-1]
    out = {"block_logits": base[0]}
    if model.markov_head is None:
      out["corrected_logits"] = base[0]
    else:
      out["corrected_logits"] = model.markov_head.apply_block_logits(
        base[:, None], token_ids=prev[:, None], hidden_states=hidden[:, None]
      )[0, 0]
    conf = model.predict_confidence_step(hidden, prev_token_ids=prev)
    out["confidence_logits"] = None if conf is None else conf[0]
    greedy, greedy_logits = model.sample_draft_tokens(
      base, first_prev_token_ids=tokens[:, a], temperature=0.0, hidden_states=hidden
    )
    out["greedy_tokens"], out["greedy_logits"] = greedy[0], greedy_logits[0]
  return {k: None if v is None else v.numpy() for k, v in out.items()}


def deepspec_evaluator_proposal(model, tokens, feats, a: int) -> dict:
  """A greedy proposal exactly as DeepSpec's evaluator makes one (KV cache, sdpa)."""
  import torch
  from deepspec.eval.dspark.draft_ops import build_dspark_proposal, forward_dspark_draft_block
  from transformers import DynamicCache

  class Cache(DynamicCache):
    """DeepSpec (pinned to transformers 5.10.2) calls `crop(n)` with n > 0 meaning "keep the
    first n positions"; transformers 5.24 refuses positive values and takes -k as "drop the
    last k". This maps the old call onto the new one; nothing else differs."""

    def crop(self, n: int) -> None:
      if n > 0:
        n = -(self.get_seq_length() - n)
      super().crop(n)

  g = model.block_size
  ids = torch.full((1, g), int(model.mask_token_id), dtype=torch.long)
  ids[:, 0] = tokens[:, a]
  cache = Cache()
  with torch.no_grad():
    hidden = forward_dspark_draft_block(
      model,
      draft_input_ids=ids,
      position_ids=torch.arange(a + g)[None],
      past_key_values_draft=cache,
      target_hidden_states=feats[:, :a],
      start=a,
      block_size=g,
    )
    prop = build_dspark_proposal(
      model,
      draft_input_ids=ids,
      block_hidden=hidden,
      block_size=g,
      temperature=0.0,
      confidence_threshold=0.0,
    )
  assert cache.get_seq_length() == a  # the context stays cached, the block is dropped
  conf = prop.confidence_logits
  return {
    "tokens": prop.verify_input_ids[0, 1:].numpy(),
    "confidence": None if conf is None else torch.sigmoid(conf[0]).numpy(),
  }


def dense_dspark_mask(**kwargs):
  """DeepSpec's DSpark training mask as a dense bool [B, 1, Q, KV] (True: attend), for attention
  other than flex: its own `create_dspark_attention_mask`'s mask_mod evaluated at every (q, kv)."""
  import torch
  from deepspec.modeling.dspark.common import create_dspark_attention_mask

  block_mask = create_dspark_attention_mask(**kwargs)
  bsz, q_len = kwargs["anchor_positions"].shape[0], block_mask.shape[-2]
  b = torch.arange(bsz)[:, None, None]
  q = torch.arange(q_len)[None, :, None]
  kv = torch.arange(block_mask.shape[-1])[None, None, :]
  return block_mask.mask_mod(b, None, q, kv)[:, None]


def deepspec_train(model, tokens, feats, anchors, dense_mask: bool = False) -> dict:
  """DeepSpec's training forward at fixed anchors (its sampler replaced at run time); with
  `dense_mask`, its block mask densified for sdpa (flex_attention on CPU is float32 only)."""
  import deepspec.modeling.dspark.qwen3.modeling as modeling
  import torch

  fixed = torch.as_tensor(anchors, dtype=torch.long)[None]

  def sample_anchor_positions(*, seq_len, loss_mask, num_anchors, device):
    del seq_len, loss_mask, num_anchors, device
    return fixed, torch.ones_like(fixed, dtype=torch.bool)

  kept = []
  hook = model.norm.register_forward_hook(lambda mod, inp, out: kept.append(out))
  original = modeling.sample_anchor_positions, modeling.create_dspark_attention_mask
  modeling.sample_anchor_positions = sample_anchor_positions
  if dense_mask:
    modeling.create_dspark_attention_mask = dense_dspark_mask
  try:
    with torch.no_grad():
      out = model(tokens, feats, torch.ones_like(tokens, dtype=feats.dtype))
      assert len(kept) == 1
      base = model.compute_logits(kept[0]).reshape(out.draft_logits.shape)
  finally:
    modeling.sample_anchor_positions, modeling.create_dspark_attention_mask = original
    hook.remove()
  conf = out.confidence_pred
  return {
    "train_block_logits": base.numpy(),
    "train_logits": out.draft_logits.numpy(),
    "train_confidence_logits": None if conf is None else conf.numpy(),
  }


def deepspec_outputs(folder: Path, tokens_np, feats_np, a: int, anchors) -> dict:
  import torch

  tokens, feats = torch.as_tensor(tokens_np, dtype=torch.long), torch.as_tensor(feats_np)
  eager, load_eager = deepspec_load(folder, "eager")
  sdpa, load_sdpa = deepspec_load(folder, "sdpa")
  flex, load_flex = deepspec_load(folder, "flex_attention")
  out = deepspec_block(eager, tokens, feats, a)
  evaluator = deepspec_evaluator_proposal(sdpa, tokens, feats, a)
  out["evaluator_tokens"], out["evaluator_confidence"] = (
    evaluator["tokens"],
    evaluator["confidence"],
  )
  out |= deepspec_train(flex, tokens, feats, anchors)
  meta = {
    "loading": {"eager": load_eager, "sdpa": load_sdpa, "flex_attention": load_flex},
    "weights": deepspec_weights_are_the_files(eager, folder),
    "config": {
      "markov_head": None if eager.markov_head is None else eager.markov_head.markov_head_type,
      "markov_rank": int(eager.config.markov_rank),
      "confidence_head": eager.confidence_head is not None,
      "confidence_head_with_markov": bool(eager.confidence_head_with_markov),
      "block_size": int(eager.block_size),
      "mask_token_id": int(eager.mask_token_id),
      "target_layer_ids": list(eager.target_layer_ids),
    },
  }
  return out, meta


def deepspec_float64(folder: Path, tokens_np, feats_np, a: int, anchors) -> dict:
  """DeepSpec's block and training outputs computed in float64 from the same float32 weights and
  features (exactly upcast): the yardstick for how far float32 rounding alone moves each side."""
  import torch

  tokens = torch.as_tensor(tokens_np, dtype=torch.long)
  feats = torch.as_tensor(np.asarray(feats_np, np.float64))
  # sdpa: eager attention takes its softmax in float32 whatever the inputs.
  model, _ = deepspec_load(folder, "sdpa", torch.float64)
  return deepspec_block(model, tokens, feats, a) | deepspec_train(
    model, tokens, feats, anchors, dense_mask=True
  )


F64_QUANTITIES = (
  "block_logits",
  "corrected_logits",
  "confidence_logits",
  "greedy_logits",
  "train_block_logits",
  "train_logits",
  "train_confidence_logits",
)


def float64_check(ours: dict, theirs: dict, exact: dict) -> dict:
  """Max |x - float64 DeepSpec| of each float32 side, per quantity."""
  res = {}
  for name in F64_QUANTITIES:
    if exact.get(name) is None:
      res[name] = None
      continue
    res[name] = {
      "deepspec_float32": diff(theirs[name], exact[name])["max_abs"],
      "dspark_jax_float32": diff(ours[name], exact[name])["max_abs"],
    }
  return res


# ---------------------------------------------------------------------------------------------
# dspark-jax side (as tests/io/test_deepspec_fixture.py).


def ours_outputs(drafter, params, tokens_np, feats_np, a: int, anchors) -> dict:
  from dspark_jax.decoding.sampling import SamplingParams

  tokens, feats = jnp.asarray(tokens_np, jnp.int32), jnp.asarray(feats_np)
  g = drafter.draft_len
  out = {}
  train = drafter.train_forward(params, tokens, feats, jnp.asarray(anchors)[None])
  out["train_block_logits"] = train.base_logits
  out["train_logits"] = train.logits
  out["train_confidence_logits"] = train.confidence_logits
  one = drafter.train_forward(params, tokens, feats, jnp.array([[a]]))
  out["block_logits"] = one.base_logits[0, 0]
  out["confidence_logits"] = None if one.confidence_logits is None else one.confidence_logits[0, 0]
  state = drafter.init_state(params, feats[:, :a], tokens[:, :a], jnp.array([a]), 32)
  anchor, pos = tokens[:, a], jnp.array([a])
  forced = drafter.propose_forced(params, state, anchor, pos, tokens[:, a + 1 : a + 1 + g])
  out["corrected_logits"] = forced.logits[0]
  out["corrected_confidence"] = None if forced.confidence is None else forced.confidence[0]
  greedy, _ = drafter.propose(
    params, state, anchor, pos, SamplingParams(), jnp.uint32(0), jnp.array([0], jnp.uint32)
  )
  out["greedy_tokens"], out["greedy_logits"] = greedy.tokens[0], greedy.logits[0]
  out["greedy_confidence"] = None if greedy.confidence is None else greedy.confidence[0]
  return {k: None if v is None else np.asarray(v) for k, v in out.items()}


def compare(ours: dict, theirs: dict) -> dict:
  """Max differences per quantity; None where the drafter has no such output (DFlash)."""
  pairs = [
    ("block_logits", "block_logits", "block_logits"),
    ("corrected_logits", "corrected_logits", "corrected_logits"),
    ("confidence_logits", "confidence_logits", "confidence_logits"),
    ("greedy_logits", "greedy_logits", "greedy_logits"),
    ("train_block_logits", "train_block_logits", "train_block_logits"),
    ("train_logits", "train_logits", "train_logits"),
    ("train_confidence_logits", "train_confidence_logits", "train_confidence_logits"),
    # The inference path's c_k = sigmoid(confidence logit), teacher-forced and greedy.
    ("corrected_confidence", "corrected_confidence", "sigmoid_confidence_logits"),
    ("evaluator_confidence", "greedy_confidence", "evaluator_confidence"),
  ]
  theirs = dict(theirs)
  if theirs.get("confidence_logits") is not None:
    theirs["sigmoid_confidence_logits"] = 1 / (
      1 + np.exp(-theirs["confidence_logits"].astype(np.float64))
    )
  res: dict = {}
  for name, mine, ref in pairs:
    x, y = ours.get(mine), theirs.get(ref)
    if x is None or y is None:
      assert x is None and y is None, f"{name}: one side has it, the other not"
      res[name] = None
    else:
      res[name] = diff(x, y)
  res["greedy_tokens_equal"] = bool(np.array_equal(ours["greedy_tokens"], theirs["greedy_tokens"]))
  res["evaluator_tokens_equal"] = bool(
    np.array_equal(ours["greedy_tokens"], theirs["evaluator_tokens"])
  )
  res["greedy_tokens"] = [int(t) for t in theirs["greedy_tokens"]]
  return res


def worst(res: dict) -> float:
  return max(v["max_abs"] for v in res.values() if isinstance(v, dict) and "max_abs" in v)


def target_features(target_dir: Path, tokens_np, layer_ids) -> np.ndarray:
  """DeepSpec's context features: transformers' hidden states, `extract_context_feature`."""
  import torch
  from deepspec.modeling.dspark.common import extract_context_feature
  from transformers import AutoModelForCausalLM

  with capture_loading():
    hf = AutoModelForCausalLM.from_pretrained(
      str(target_dir), dtype=torch.float32, attn_implementation="eager"
    ).eval()
  with torch.no_grad():
    hs = hf(torch.as_tensor(tokens_np, dtype=torch.long), output_hidden_states=True).hidden_states
  return extract_context_feature(hs, list(layer_ids)).numpy()


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--deepspec", required=True, type=Path, help="a DeepSpec checkout")
  ap.add_argument("--deepspec-commit", default=None, help="recorded when PATH has no .git")
  ap.add_argument("--out", type=Path, default=ROOT / "results" / "deepspec_interop")
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--keep-folders", type=Path, default=None, help="save the drafters here")
  args = ap.parse_args()

  deepspec = args.deepspec.resolve()
  if not (deepspec / "deepspec" / "modeling" / "dspark" / "qwen3" / "modeling.py").is_file():
    sys.exit(f"{deepspec} is not a DeepSpec checkout (no deepspec/modeling/dspark/qwen3)")
  sys.path.insert(0, str(deepspec))
  import torch
  import transformers

  torch.set_num_threads(2)
  torch.manual_seed(0)

  from safetensors.numpy import load_file, save_file

  from dspark_jax.drafters.build import make_drafter
  from dspark_jax.io.deepspec import load_drafter, save_drafter
  from dspark_jax.io.hf import load_hf_folder
  from dspark_jax.models.transformer import forward

  ref = dict(np.load(FIXTURE / "reference_outputs.npz"))
  tokens, a = ref["tokens"], int(ref["anchor"])
  anchors = [int(x) for x in ref["vanilla/train_anchors"]]
  layer_ids = tuple(int(i) for i in ref["layer_ids"])

  feats = target_features(FIXTURE / "target", tokens, layer_ids)
  untied = load_hf_folder(FIXTURE / "target")
  tied_config = dataclasses.replace(untied[0], tie_embeddings=True)
  tied = tied_config, {k: v for k, v in untied[1].items() if k != "lm_head"}
  feature_checks = {"transformers_vs_fixture": diff(feats, ref["features"])}
  for tie, (config, params) in (("untied", untied), ("tied", tied)):
    ours = forward(
      params,
      jnp.asarray(tokens, jnp.int32),
      jnp.arange(tokens.shape[1])[None],
      config=config,
      feature_layers=layer_ids,
    )
    feature_checks[f"dspark_jax_{tie}_vs_transformers"] = diff(ours.features, feats)
  print("features:", json.dumps(feature_checks))

  # 1. The harness against what DeepSpec itself recorded for its own folders.
  harness = {}
  for kind in KINDS:
    theirs, meta = deepspec_outputs(
      FIXTURE / f"drafter_{kind}", tokens, ref["features"], a, anchors
    )
    rec = {}
    for name in (
      "block_logits",
      "corrected_logits",
      "confidence_logits",
      "train_block_logits",
      "train_logits",
      "train_confidence_logits",
    ):
      if f"{kind}/{name}" in ref:
        rec[name] = diff(theirs[name], ref[f"{kind}/{name}"].reshape(theirs[name].shape))
    rec["greedy_tokens_equal"] = bool(
      np.array_equal(theirs["greedy_tokens"], ref[f"{kind}/greedy_tokens"])
    )
    rec["loads_clean"] = all(v["clean"] for v in meta["loading"].values())
    harness[kind] = rec
    print(f"harness {kind}: worst {worst(rec):.2e}, greedy equal {rec['greedy_tokens_equal']}")

  # 2. Folders saved by dspark-jax.
  results = {}
  with tempfile.TemporaryDirectory() as tmp:
    base = args.keep_folders or Path(tmp)
    for tie, (config, params) in (("untied", untied), ("tied", tied)):
      for i, kind in enumerate(KINDS):
        drafter = make_drafter(draft_config(kind), config)
        dparams = drafter.init_params(jax.random.key(args.seed + i), params)
        dparams["trainable"] = randomize(dparams["trainable"], args.seed + i)
        folder = base / f"{tie}_{kind}"
        save_drafter(folder, drafter, dparams)
        before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}
        ours = ours_outputs(drafter, dparams, tokens, feats, a, anchors)
        theirs, meta = deepspec_outputs(folder, tokens, feats, a, anchors)
        after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}
        again, _ = load_drafter(folder, config, params)
        rec = compare(ours, theirs)
        rec["worst_max_abs"] = worst(rec)
        exact = deepspec_float64(folder, tokens, feats, a, anchors)
        rec["vs_float64_deepspec"] = float64_check(ours, theirs, exact)
        rec["folder_unchanged_by_deepspec"] = before == after
        rec["files"] = sorted(before)
        rec["reloads_in_dspark_jax_equal"] = again == drafter
        rec |= meta
        rec["loads_clean"] = all(v["clean"] for v in meta["loading"].values())
        saved_head = load_file(folder / "model.safetensors")["lm_head.weight"]
        want_head = params["embedding"] if tie == "tied" else np.asarray(params["lm_head"]).T
        rec["folder_lm_head_is_targets_head"] = bool(np.array_equal(saved_head, want_head))
        rec["within_1e-5"] = rec["worst_max_abs"] <= TOL
        # Both float32 results equally far from float64 DeepSpec: rounding, not a format gap.
        rec["float32_rounding_only"] = all(
          v["dspark_jax_float32"] <= ROUNDING_FACTOR * v["deepspec_float32"] + 1e-6
          for v in rec["vs_float64_deepspec"].values()
          if v is not None
        )
        rec["pass"] = bool(
          rec["within_1e-5"]
          and rec["greedy_tokens_equal"]
          and rec["evaluator_tokens_equal"]
          and rec["loads_clean"]
          and rec["weights"]["bit_identical"]
          and rec["folder_lm_head_is_targets_head"]
          and rec["folder_unchanged_by_deepspec"]
        )
        rec["pass_up_to_float32_rounding"] = bool(
          (rec["within_1e-5"] or rec["float32_rounding_only"])
          and rec["greedy_tokens_equal"]
          and rec["evaluator_tokens_equal"]
          and rec["loads_clean"]
          and rec["weights"]["bit_identical"]
          and rec["folder_lm_head_is_targets_head"]
          and rec["folder_unchanged_by_deepspec"]
        )
        results[f"{kind}/{tie}"] = rec
        print(
          f"{kind:8s} {tie:6s} worst max|diff| {rec['worst_max_abs']:.2e}  greedy equal "
          f"{rec['greedy_tokens_equal']}/{rec['evaluator_tokens_equal']}  loads clean "
          f"{rec['loads_clean']}  weights bit-identical {rec['weights']['bit_identical']}"
        )
    # A control for the load check: an edited copy (a tensor dropped, one added) must be caught.
    edited = base / "control_edited"
    shutil.copytree(base / "untied_vanilla", edited)
    tensors = load_file(edited / "model.safetensors")
    tensors["bogus.weight"] = tensors.pop("fc.weight")
    save_file(tensors, str(edited / "model.safetensors"))
    _, report = deepspec_load(edited, "eager")
    control = {
      "edit": "fc.weight renamed bogus.weight",
      "caught": not report["clean"],
      "missing_keys": report["missing_keys"],
      "unexpected_keys": report["unexpected_keys"],
      "log": [line.replace(str(base), "<folders>") for line in report["log"]],
    }
    print(f"load-check control caught the edit: {control['caught']}")

  record = {
    "what": "dspark-jax drafter folders (save_drafter, float32) loaded unedited by DeepSpec's "
    "Qwen3DSparkModel.from_pretrained; max |DeepSpec - dspark-jax| per quantity",
    "tolerance_max_abs": TOL,
    "all_pass": all(r["pass"] for r in results.values()),
    "all_pass_up_to_float32_rounding": all(
      r["pass_up_to_float32_rounding"] for r in results.values()
    ),
    "float32_rounding_factor": ROUNDING_FACTOR,
    "load_check_control": control,
    "inputs": {
      "target": str(FIXTURE.relative_to(ROOT) / "target"),
      "tokens": [int(t) for t in tokens[0]],
      "anchor": a,
      "train_anchors": anchors,
      "features": "transformers AutoModelForCausalLM hidden states, extract_context_feature",
      "drafter_seed": args.seed,
    },
    "feature_checks": feature_checks,
    "harness_vs_fixture": harness,
    "results": results,
    "versions": {
      "python": platform.python_version(),
      "torch": torch.__version__,
      "transformers": transformers.__version__,
      "jax": jax.__version__,
      "deepspec_commit": deepspec_commit(deepspec, args.deepspec_commit),
      "deepspec_blob_ids": {f: git_blob_id(deepspec / f) for f in DEEPSPEC_FILES},
    },
  }
  args.out.mkdir(parents=True, exist_ok=True)
  (args.out / "interop.json").write_text(json.dumps(record, indent=2) + "\n")
  print(f"all pass: {record['all_pass']}; wrote {args.out / 'interop.json'}")


if __name__ == "__main__":
  main()
