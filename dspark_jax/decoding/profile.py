"""Cost profiles: the measured seconds a schedule plans with (`scheduler.CostTable`).

A profile holds, for each batch size, the wall time of the target's verification forward at
every compiled width (anchor + drafts, run as the decode loop runs it: inside a jitted loop that
carries the donated cache) and of the drafter's proposal, medians of `repeats` calls after a
warm-up. Costs depend on the machine, so a profile is keyed by what it was measured for: the
model and drafter files (fingerprints of their contents), the JAX platform, device kind and
count, and the JAX version; `load_profile` refuses one made for anything else. Profiles live
under `profile_dir()` (DSPARK_JAX_CACHE, default ~/.cache/dspark-jax/profiles) named by a hash
of their key, so `generate`, `eval` and the engine find the one for their setting.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from dspark_jax.decoding.scheduler import CostTable, compiled_widths

PROFILE_VERSION = 1
DEFAULT_CAPACITY, DEFAULT_VALID = 512, 128  # the cache a profile's forwards run over
STEPS_PER_CALL = 4  # forwards per timed call (the per-forward time is the quotient)


class ProfileError(ValueError):
  """A profile that is missing, unreadable or made for another setting."""


FINGERPRINT_BYTES = 1 << 20  # read from each end of every file


def fingerprint(path: str | Path) -> str:
  """What the weights are, not where they are, cheaply: sha256 over each file's name, size and
  first and last MiB (a folder's files in name order). Start-up never reads whole checkpoints;
  retrained or requantised weights change those bytes."""
  path = Path(path)
  files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
  h = hashlib.sha256()
  for f in files:
    size = f.stat().st_size
    h.update(f"{f.name}:{size}".encode())
    with open(f, "rb") as fh:
      h.update(fh.read(FINGERPRINT_BYTES))
      if size > FINGERPRINT_BYTES:
        fh.seek(max(size - FINGERPRINT_BYTES, FINGERPRINT_BYTES))
        h.update(fh.read())
  return h.hexdigest()[:16]


def profile_key(model_path, drafter_path, drafter_desc: str) -> dict[str, Any]:
  """What a profile was measured for. `drafter_desc` names the drafter as run (kind, slots)."""
  device = jax.devices()[0]
  return {
    "version": PROFILE_VERSION,
    "model": fingerprint(model_path),
    "drafter": fingerprint(drafter_path) if drafter_path else "",
    "drafter_desc": drafter_desc,
    "platform": jax.default_backend(),
    "device_kind": getattr(device, "device_kind", str(device)),
    "device_count": jax.device_count(),
    "jax": jax.__version__,
  }


def profile_dir() -> Path:
  root = os.environ.get("DSPARK_JAX_CACHE") or Path.home() / ".cache" / "dspark-jax"
  return Path(root) / "profiles"


def default_path(key: dict) -> Path:
  digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
  return profile_dir() / f"{digest}.json"


def median_seconds(fn: Callable[[], Any], repeats: int) -> float:
  """Median wall seconds of fn() (blocked until ready) over `repeats` calls, after a warm-up."""
  jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def forward_steps_fn(config, steps: int, feature_layers: Sequence[int] = ()):
  """(params, tokens [B, T], cache, valid [B]) -> (cache, checksum) after `steps` forwards of T
  tokens over the donated, carried cache, as the decode loops run them (lengths, positions and
  tokens move every step, so nothing is hoisted out of the loop)."""
  from dspark_jax.models.transformer import forward

  layers = tuple(feature_layers)

  def run(params, tokens, cache, valid_B):
    t = tokens.shape[1]

    def body(i, carry):
      cache, acc = carry
      lengths = valid_B + i % 2
      positions = lengths[:, None] + jnp.arange(t)[None]
      out = forward(
        params,
        tokens + i % 2,
        positions,
        cache.with_lengths(lengths),
        config=config,
        feature_layers=layers,
      )
      return out.cache, acc + out.logits[:, -1, 0].sum()

    return jax.lax.fori_loop(0, steps, body, (cache, jnp.float32(0)))

  return jax.jit(run, donate_argnums=2)


def time_forward(
  params, config, batch: int, width: int, *, feature_layers=(), capacity=None, valid=None, repeats=5
) -> float:
  """Median seconds of one forward of `width` tokens per row over a cache of `valid` slots."""
  from dspark_jax.models.kv_cache import KVCache

  capacity = capacity or DEFAULT_CAPACITY
  valid = DEFAULT_VALID if valid is None else valid
  step = forward_steps_fn(config, STEPS_PER_CALL, feature_layers)
  tokens = jnp.ones((batch, width), jnp.int32)
  lens = jnp.full((batch,), valid, jnp.int32)
  state = {"cache": KVCache.create(config, batch, capacity)}

  def call():
    state["cache"], acc = step(params, tokens, state["cache"], lens)
    return acc

  return median_seconds(call, repeats) / STEPS_PER_CALL


def time_propose(
  drafter, draft_params, config, batch: int, *, capacity=None, valid=None, repeats=5
):
  """Median seconds of the drafter's proposal for `batch` rows after `valid` context tokens."""
  from dspark_jax.decoding.sampling import SamplingParams

  capacity = capacity or DEFAULT_CAPACITY
  valid = DEFAULT_VALID if valid is None else valid
  feats = jnp.zeros((batch, valid, len(drafter.feature_layers) * config.hidden_size))
  lens = jnp.full((batch,), valid, jnp.int32)
  tokens = jnp.ones((batch, valid), jnp.int32)
  state = jax.jit(drafter.init_state, static_argnums=4)(draft_params, feats, tokens, lens, capacity)
  greedy = SamplingParams()
  propose = jax.jit(lambda p, s, a, n, i: drafter.propose(p, s, a, n, greedy, jnp.uint32(0), i)[0])
  args = (
    draft_params,
    state,
    jnp.ones((batch,), jnp.int32),
    lens,
    jnp.arange(batch, dtype=jnp.uint32),
  )
  return median_seconds(lambda: propose(*args).tokens, repeats)


def measure(
  params, config, drafter, draft_params, batches: Sequence[int], *, repeats=5, progress=None
) -> dict[str, dict]:
  """{str(batch): {"widths", "verify_seconds", "propose_seconds"}} measured here."""
  widths = compiled_widths(drafter.draft_len)
  tables = {}
  for b in batches:
    verify = []
    for w in widths:
      verify.append(
        time_forward(params, config, b, w, feature_layers=drafter.feature_layers, repeats=repeats)
      )
      if progress is not None:
        progress.update(1)
    propose = time_propose(drafter, draft_params, config, b, repeats=repeats)
    if progress is not None:
      progress.update(1)
    tables[str(b)] = {"widths": list(widths), "verify_seconds": verify, "propose_seconds": propose}
  return tables


def num_measurements(drafter, batches: Sequence[int]) -> int:
  return len(batches) * (len(compiled_widths(drafter.draft_len)) + 1)


def save_profile(path: str | Path, key: dict, tables: dict) -> Path:
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  old = {}
  if path.is_file():
    try:
      old = load_profile(path, key)["tables"]
    except ProfileError:
      old = {}
  record = {
    "key": key,
    "tables": old | tables,
    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
  }
  tmp = path.with_suffix(".json.tmp")
  tmp.write_text(json.dumps(record, indent=2) + "\n")
  tmp.replace(path)
  return path


def load_profile(path: str | Path, key: dict | None = None) -> dict:
  """The profile at `path`; with `key`, ProfileError unless it was made for that key."""
  path = Path(path)
  try:
    record = json.loads(path.read_text())
  except FileNotFoundError:
    raise ProfileError(f"no cost profile at {path}") from None
  except (OSError, ValueError) as e:
    raise ProfileError(f"{path} is not a cost profile: {e}") from None
  if not isinstance(record, dict) or not {"key", "tables"} <= set(record):
    raise ProfileError(f"{path} is not a cost profile: it has no key and tables")
  if key is not None and record["key"] != key:
    diff = sorted(k for k in set(key) | set(record["key"]) if key.get(k) != record["key"].get(k))
    raise ProfileError(
      f"{path} was measured for another setting (differs in: {', '.join(diff)}); "
      "run `dspark-jax profile` for this one"
    )
  return record


def cost_table(record: dict, batch: int) -> CostTable:
  """The CostTable of `batch` rows; ProfileError when the profile has no such batch."""
  table = record["tables"].get(str(batch))
  if table is None:
    have = ", ".join(sorted(record["tables"], key=int)) or "none"
    raise ProfileError(f"the cost profile has no batch {batch} (it has: {have})")
  return CostTable(
    tuple(int(w) for w in table["widths"]),
    tuple(float(s) for s in table["verify_seconds"]),
    float(table["propose_seconds"]),
  )


def load_or_measure(
  params,
  config,
  drafter,
  draft_params,
  batch: int,
  key: dict,
  *,
  path=None,
  repeats=5,
  progress=None,
) -> tuple[CostTable, Path, bool]:
  """The CostTable for `batch` from the profile of `key` (at `path` or the default place),
  measured now and saved when it is missing. Returns (table, path, measured)."""
  path = Path(path) if path else default_path(key)
  if path.is_file():
    record = load_profile(path, key)  # refuses a profile of another setting
    if str(batch) in record["tables"]:
      return cost_table(record, batch), path, False
  tables = measure(
    params, config, drafter, draft_params, [batch], repeats=repeats, progress=progress
  )
  save_profile(path, key, tables)
  return cost_table({"tables": tables}, batch), path, True
