"""The offline target-feature cache (tensorstore), and the same features computed online.

Per token of every training sample (prompt + regenerated response): the input id, the loss mask
(1 on the response, which ends with the end-of-turn token when the answer finished), the chosen
target layers' raw outputs [m * D] and the final-normed hidden state [D], both bfloat16, and the
log-sum-exp of the target's logits over the vocabulary (float32, computed from the stored
bfloat16 hidden state). Tokens of all samples lie on one flat axis; `offsets[i]:offsets[i+1]`
is sample i. Target logits are never stored: the trainer recomputes them from the hidden state
through the frozen LM head, and a drafter with a reduced draft vocabulary of N tokens needs
only N of them per prediction, the stored log-sum-exp giving their normaliser.

Writing goes in chunks of samples; after each chunk the manifest (samples and tokens done) is
replaced atomically, so a killed writer resumes at the last committed chunk and rewrites the
tokens after it. The manifest also names the target (config and a weight fingerprint) and the
layers, and `open_cache` refuses a cache that does not match the drafter and target at hand.

Online mode (`online_features`) runs the same target forward inside the training step and
rounds to bfloat16 like the cache, so both modes feed the trainer identical numbers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from dspark_jax.config import ModelConfig
from dspark_jax.drafters.shared import frozen_parts, lm_logits
from dspark_jax.models.transformer import forward

# 2 added `target_lse`; version-1 caches (without it) still open, and train as before.
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
STORE_DTYPE = "bfloat16"


class CacheError(ValueError):
  """The cache is missing, incomplete, corrupt or made for another target or drafter."""


def target_fingerprint(config: ModelConfig, params) -> str:
  """Config fields and a sample of the embedding: equal targets, equal fingerprints."""
  emb = np.asarray(params["embedding"][:: max(1, config.vocab_size // 64), :8], np.float32)
  digest = hashlib.sha256(repr(dataclasses.asdict(config)).encode() + emb.tobytes())
  return digest.hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class Sample:
  tokens: tuple[int, ...]
  loss_mask: tuple[int, ...]


def samples_from_regenerated(rows: Sequence[dict], max_len: int) -> list[Sample]:
  """Training samples (prompt ids + response ids, cut at max_len) from regeneration rows;
  rows that errored or have no response are skipped."""
  out = []
  for row in rows:
    if row.get("finish") == "error" or not row.get("response_ids"):
      continue
    tokens = list(row["prompt_ids"]) + list(row["response_ids"])
    mask = [0] * len(row["prompt_ids"]) + [1] * len(row["response_ids"])
    out.append(Sample(tuple(tokens[:max_len]), tuple(mask[:max_len])))
  return out


def bytes_per_token(config: ModelConfig, num_layers: int) -> int:
  """(m + 1) * D bfloat16 values, an int32 id, a uint8 mask and a float32 log-sum-exp."""
  return (num_layers + 1) * config.hidden_size * 2 + 4 + 1 + 4


def estimate_bytes(samples: Sequence[Sample], config: ModelConfig, layer_ids) -> int:
  return sum(len(s.tokens) for s in samples) * bytes_per_token(config, len(layer_ids))


def online_features(params, tokens_BxT, config: ModelConfig, layer_ids):
  """(features [B, T, m*D], hidden [B, T, D]) in bfloat16, exactly as the cache stores them."""
  positions = jnp.broadcast_to(jnp.arange(tokens_BxT.shape[1], dtype=jnp.int32), tokens_BxT.shape)
  out = forward(params, tokens_BxT, positions, None, config=config, feature_layers=tuple(layer_ids))
  return out.features.astype(jnp.bfloat16), out.hidden.astype(jnp.bfloat16)


online_features_jit = jax.jit(online_features, static_argnames=("config", "layer_ids"))


def target_lse(params, hidden_BxTxD, config: ModelConfig) -> jax.Array:
  """float32 [B, T]: log-sum-exp of the target's logits recomputed from (bfloat16) hidden
  states, exactly as the trainer recomputes the logits themselves."""
  logits = lm_logits(frozen_parts(params, config), hidden_BxTxD.astype(jnp.float32), config)
  return jax.nn.logsumexp(logits, axis=-1)


target_lse_jit = jax.jit(target_lse, static_argnames=("config",))


def _spec(path: Path, shape, dtype: str, chunk0: int):
  return {
    "driver": "zarr",
    "kvstore": {"driver": "file", "path": str(path)},
    "metadata": {"shape": list(shape), "chunks": [chunk0, *shape[1:]], "dtype": _zarr(dtype)},
  }


def _zarr(dtype: str) -> str:
  return {"bfloat16": "bfloat16", "int32": "<i4", "uint8": "|u1", "float32": "<f4"}[dtype]


def _arrays(
  folder: Path, capacity: int, config: ModelConfig, m: int, create: bool, version=FORMAT_VERSION
):
  import tensorstore as ts

  d = config.hidden_size
  chunk = 4096
  layout = {
    "input_ids": ((capacity,), "int32"),
    "loss_mask": ((capacity,), "uint8"),
    "features": ((capacity, m * d), STORE_DTYPE),
    "hidden": ((capacity, d), STORE_DTYPE),
  }
  if version >= 2:
    layout["target_lse"] = ((capacity,), "float32")
  opened = {}
  for name, (shape, dtype) in layout.items():
    spec = _spec(folder / name, shape, dtype, chunk)
    opened[name] = ts.open(spec, create=create, open=not create, delete_existing=create).result()
  return opened


def _write_manifest(folder: Path, manifest: dict) -> None:
  tmp = folder / "manifest.json.tmp"
  tmp.write_text(json.dumps(manifest))
  tmp.replace(folder / "manifest.json")


def build_cache(
  folder: str | Path,
  samples: Sequence[Sample],
  params,
  config: ModelConfig,
  layer_ids: Sequence[int],
  *,
  target_name: str,
  batch_size: int = 8,
  width_multiple: int = 128,
  progress: bool = True,
  max_bytes: int | None = None,
) -> dict:
  """Writes (or resumes) the cache of `samples`; returns the final manifest.

  Raises:
    CacheError: the folder holds a cache of other samples, target or layers; or the estimated
      size exceeds `max_bytes`.
  """
  from tqdm import tqdm

  folder = Path(folder)
  layer_ids = tuple(int(i) for i in layer_ids)
  lengths = [len(s.tokens) for s in samples]
  offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
  capacity = int(offsets[-1])
  size = estimate_bytes(samples, config, layer_ids)
  if max_bytes is not None and size > max_bytes:
    raise CacheError(f"the cache would take {size / 1e9:.2f} GB, more than max_bytes allows")
  identity = {
    "version": FORMAT_VERSION,
    "target": target_name,
    "target_fingerprint": target_fingerprint(config, params),
    "hidden_size": config.hidden_size,
    "layer_ids": list(layer_ids),
    "num_samples": len(samples),
    "samples_fingerprint": hashlib.sha256(
      b"".join(np.asarray(s.tokens, np.int32).tobytes() + b"|" for s in samples)
    ).hexdigest()[:16],
    "estimated_bytes": size,
  }
  manifest_file = folder / "manifest.json"
  if manifest_file.is_file():
    manifest = json.loads(manifest_file.read_text())
    diff = {k: (manifest.get(k), v) for k, v in identity.items() if manifest.get(k) != v}
    if diff:
      raise CacheError(f"{folder} holds another cache: {diff} (existing, requested)")
    arrays = _arrays(folder, capacity, config, len(layer_ids), create=False)
  else:
    folder.mkdir(parents=True, exist_ok=True)
    arrays = _arrays(folder, capacity, config, len(layer_ids), create=True)
    manifest = {**identity, "offsets": offsets.tolist(), "samples_done": 0, "complete": False}
    _write_manifest(folder, manifest)

  start = manifest["samples_done"]
  bar = tqdm(total=len(samples), initial=start, desc="target cache", disable=not progress)
  for first in range(start, len(samples), batch_size):
    batch = samples[first : first + batch_size]
    width = -(-max(len(s.tokens) for s in batch) // width_multiple) * width_multiple
    tokens = np.zeros((batch_size, width), np.int32)
    for j, s in enumerate(batch):
      tokens[j, : len(s.tokens)] = s.tokens
    feats, hidden = online_features_jit(params, tokens, config, layer_ids)
    lse = np.asarray(target_lse_jit(params, hidden, config))
    feats, hidden = np.asarray(feats), np.asarray(hidden)
    lo, hi = int(offsets[first]), int(offsets[first + len(batch)])
    ids = np.concatenate([np.asarray(s.tokens, np.int32) for s in batch])
    mask = np.concatenate([np.asarray(s.loss_mask, np.uint8) for s in batch])
    f_rows = np.concatenate([feats[j, : len(s.tokens)] for j, s in enumerate(batch)])
    h_rows = np.concatenate([hidden[j, : len(s.tokens)] for j, s in enumerate(batch)])
    lse_rows = np.concatenate([lse[j, : len(s.tokens)] for j, s in enumerate(batch)])
    writes = [
      arrays["target_lse"][lo:hi].write(lse_rows),
      arrays["input_ids"][lo:hi].write(ids),
      arrays["loss_mask"][lo:hi].write(mask),
      arrays["features"][lo:hi].write(f_rows),
      arrays["hidden"][lo:hi].write(h_rows),
    ]
    for w in writes:
      w.result()
    manifest["samples_done"] = first + len(batch)
    manifest["complete"] = manifest["samples_done"] == len(samples)
    _write_manifest(folder, manifest)
    bar.update(len(batch))
  bar.close()
  if not samples:
    manifest["complete"] = True
    _write_manifest(folder, manifest)
  return manifest


@dataclasses.dataclass
class TargetCache:
  manifest: dict
  arrays: dict

  @property
  def num_samples(self) -> int:
    return self.manifest["num_samples"]

  def sample(self, i: int, names=None) -> dict[str, np.ndarray]:
    """input_ids [T], loss_mask [T], features [T, m*D], hidden [T, D] and (version 2)
    target_lse [T] of sample i; `names`: only these arrays."""
    lo, hi = self.manifest["offsets"][i], self.manifest["offsets"][i + 1]
    names = self.arrays if names is None else names
    return {name: np.asarray(self.arrays[name][lo:hi].read().result()) for name in names}

  def answer_tokens(self) -> list[np.ndarray]:
    """Per sample, its loss-masked tokens (the answer), reading only ids and masks."""
    ids = np.asarray(self.arrays["input_ids"].read().result())
    mask = np.asarray(self.arrays["loss_mask"].read().result()).astype(bool)
    offsets = self.manifest["offsets"]
    return [ids[lo:hi][mask[lo:hi]] for lo, hi in zip(offsets[:-1], offsets[1:], strict=True)]


@dataclasses.dataclass
class CacheList:
  """Several caches read as one: sample i runs through the first cache, then the next."""

  parts: list[TargetCache]

  @property
  def num_samples(self) -> int:
    return sum(p.num_samples for p in self.parts)

  def sample(self, i: int, names=None) -> dict[str, np.ndarray]:
    for part in self.parts:
      if i < part.num_samples:
        return part.sample(i, names)
      i -= part.num_samples
    raise IndexError("sample index past the end of the caches")

  def answer_tokens(self) -> list[np.ndarray]:
    return [a for p in self.parts for a in p.answer_tokens()]


def open_caches(folders: str, config: ModelConfig, params, layer_ids: Sequence[int]):
  """`open_cache` of one folder, or a `CacheList` of several (comma-separated, in order)."""
  names = [f for f in folders.split(",") if f]
  caches = [open_cache(f, config, params, layer_ids) for f in names]
  if len({tuple(c.arrays) for c in caches}) > 1:
    raise CacheError(f"{folders}: the caches have different formats; rebuild the older ones")
  return caches[0] if len(caches) == 1 else CacheList(caches)


def open_cache(
  folder: str | Path, config: ModelConfig, params, layer_ids: Sequence[int]
) -> TargetCache:
  """Opens a complete cache after checking it was made for this target and these layers.

  Raises:
    CacheError: missing, incomplete, or made for another target, width or layer set.
  """
  folder = Path(folder)
  manifest_file = folder / "manifest.json"
  if not manifest_file.is_file():
    raise CacheError(f"no target cache at {folder} (no manifest.json)")
  manifest = json.loads(manifest_file.read_text())
  if manifest.get("version") not in READABLE_VERSIONS:
    raise CacheError(
      f"{folder}: cache format {manifest.get('version')}, expected one of {READABLE_VERSIONS}"
    )
  if not manifest.get("complete"):
    raise CacheError(
      f"{folder} is incomplete ({manifest['samples_done']}/{manifest['num_samples']} samples): "
      "run the cache command again to finish it"
    )
  if manifest["hidden_size"] != config.hidden_size:
    raise CacheError(
      f"cache hidden size {manifest['hidden_size']} differs from the target's {config.hidden_size}"
    )
  if manifest["layer_ids"] != [int(i) for i in layer_ids]:
    raise CacheError(
      f"cache holds target layers {manifest['layer_ids']}, the drafter wants {list(layer_ids)}"
    )
  if manifest["target_fingerprint"] != target_fingerprint(config, params):
    raise CacheError(
      f"cache was made with another target ({manifest['target']}, fingerprint "
      f"{manifest['target_fingerprint']})"
    )
  capacity = manifest["offsets"][-1]
  arrays = _arrays(folder, capacity, config, len(layer_ids), False, manifest["version"])
  return TargetCache(manifest, arrays)
