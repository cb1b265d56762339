"""Sizes checked before anything is allocated: the model's context length and device memory.

A prompt plus a generation budget beyond the model's context would be decoded at positions it
was never trained for; a KV cache larger than the memory left gets the process killed by the
kernel with no message. Both are refused up front with a message that says what was asked
for and what there is.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

from dspark_jax.config import ModelConfig
from dspark_jax.models.kv_cache import KVCache


class BudgetError(ValueError):
  """A request that cannot fit the model's context or the memory available."""


def check_context(config: ModelConfig, longest_prompt: int, max_new_tokens: int) -> None:
  """Raises BudgetError if the longest prompt plus the budget passes the context length."""
  limit = config.context_length
  if limit is not None and longest_prompt + max_new_tokens > limit:
    raise BudgetError(
      f"prompt ({longest_prompt} tokens) + max_new_tokens ({max_new_tokens}) = "
      f"{longest_prompt + max_new_tokens} tokens exceeds the model's context length ({limit}); "
      "shorten the prompt or lower max_new_tokens"
    )


def _gib(n: float) -> str:
  return f"{n / 2**30:.2f} GiB"


def _read_int(path: str) -> int | None:
  try:
    text = Path(path).read_text().strip()
  except OSError:
    return None
  return int(text) if text.isdigit() else None


def host_available_bytes() -> int | None:
  """Memory this process can still take on the host: /proc/meminfo's MemAvailable, lowered to
  the cgroup (container) limit's headroom where one is set; None where neither is readable."""
  candidates = []
  try:
    for line in Path("/proc/meminfo").read_text().splitlines():
      if line.startswith("MemAvailable:"):
        candidates.append(int(line.split()[1]) * 1024)
  except OSError:
    pass
  limit, used = _read_int("/sys/fs/cgroup/memory.max"), _read_int("/sys/fs/cgroup/memory.current")
  if limit is not None and used is not None:
    candidates.append(max(limit - used, 0))
  if not candidates and hasattr(os, "sysconf"):
    try:
      candidates.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError):
      pass
  return min(candidates) if candidates else None


def available_bytes(device=None) -> int | None:
  """Free memory of `device` (default: the first device): the accelerator's allocator limit
  minus what is in use, or the host's available memory on CPU; None if unknown."""
  device = device or jax.devices()[0]
  if device.platform != "cpu":
    stats = device.memory_stats() or {}
    if "bytes_limit" in stats:
      return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
  return host_available_bytes()


def decode_bytes(
  config: ModelConfig, batch: int, capacity: int, prompt_width: int, extra: int = 0
) -> tuple[int, int]:
  """(KV cache bytes, prefill working bytes) of decoding `batch` rows with `capacity` slots.

  The prefill's largest transient is one layer's attention scores and their softmax, each
  [B, H, P, capacity] in float32; `extra` adds other caches (a drafter's).
  """
  kv = KVCache.bytes_needed(config, batch, capacity) + extra
  scores = 2 * batch * config.num_heads * prompt_width * capacity * 4
  return kv, scores


def check_memory(
  config: ModelConfig, batch: int, capacity: int, prompt_width: int, extra: int = 0
) -> None:
  """Raises BudgetError if the caches and the prefill's working memory exceed what is free."""
  kv, scores = decode_bytes(config, batch, capacity, prompt_width, extra)
  free = available_bytes()
  if free is not None and kv + scores > free:
    raise BudgetError(
      f"decoding {batch} row(s) with {capacity} cache slots needs about {_gib(kv + scores)} "
      f"(KV caches {_gib(kv)}, prefill attention {_gib(scores)}), but only {_gib(free)} is "
      "available; lower max_new_tokens, the prompt length or the batch size"
    )
