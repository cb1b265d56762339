"""Fixed-capacity KV cache with per-row lengths.

Row b holds its tokens contiguously in slots [0, lengths[b]); slots at or past the length are
masked out by attention, so rolling back rejected tokens is "set the length back" and costs no
copy. A forward over T new tokens writes them at slots [lengths[b], lengths[b] + T) and returns
the cache with lengths + T; the caller sets the true lengths afterwards (for example after a
right-padded prefill, or after verification accepted fewer tokens than it scored).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from dspark_jax.config import ModelConfig

# Logical axes of one layer's key or value array [B, S, Hkv, K].
KV_AXES = ("batch", "length", "kv_heads", "head_dim")


@struct.dataclass
class KVCache:
  keys: tuple[jax.Array, ...]  # per layer [B, S, Hkv, K]
  values: tuple[jax.Array, ...]  # per layer [B, S, Hkv, K]
  lengths: jax.Array  # [B] int32, valid slots per row

  @classmethod
  def create(
    cls, config: ModelConfig, batch: int, capacity: int, dtype: str | None = None
  ) -> KVCache:
    shape = (batch, capacity, config.num_kv_heads, config.head_dim)
    dt = jnp.dtype(dtype or config.dtype)
    zeros = tuple(jnp.zeros(shape, dt) for _ in range(config.num_layers))
    return cls(keys=zeros, values=zeros, lengths=jnp.zeros((batch,), jnp.int32))

  @property
  def capacity(self) -> int:
    return self.keys[0].shape[1]

  @property
  def batch(self) -> int:
    return self.keys[0].shape[0]

  def with_lengths(self, lengths: jax.Array) -> KVCache:
    """Sets each row's valid length (rollback or commit): no data moves."""
    return self.replace(lengths=jnp.asarray(lengths, jnp.int32))


def write_rows(cache_BxSxNxK: jax.Array, new_BxTxNxK: jax.Array, start_B: jax.Array) -> jax.Array:
  """Writes each row's new entries at its own start slot."""

  def write_one(row_SxNxK, new_TxNxK, start):
    return jax.lax.dynamic_update_slice(row_SxNxK, new_TxNxK.astype(row_SxNxK.dtype), (start, 0, 0))

  return jax.vmap(write_one)(cache_BxSxNxK, new_BxTxNxK, start_B)
