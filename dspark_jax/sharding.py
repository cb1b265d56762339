"""Device meshes and the logical-axis -> mesh-axis rules.

Model code names logical axes only (`batch`, `vocab`, `embed`, `heads`, `kv_heads`, `head_dim`,
`mlp`, `length`, `norm`, `expert`); this module is the one place that maps them onto physical
mesh axes (`data`, `tensor`, `expert`).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
from flax import linen as nn
from jax.sharding import NamedSharding, PartitionSpec

from dspark_jax.config import ModelConfig
from dspark_jax.models.kv_cache import KV_AXES, KVCache
from dspark_jax.models.transformer import logical_axes

MESH_AXES = ("data", "tensor", "expert")

# Data parallel over the batch; Megatron-style tensor parallel over heads, MLP width and vocab.
LOGICAL_RULES: tuple[tuple[str, str | None], ...] = (
  ("batch", "data"),
  ("vocab", "tensor"),
  ("heads", "tensor"),
  ("kv_heads", "tensor"),
  ("mlp", "tensor"),
  ("expert", "expert"),
  ("embed", None),
  ("head_dim", None),
  ("q_lora", None),  # MLA's low-rank query and key/value bottlenecks stay whole
  ("kv_lora", None),
  ("length", None),
  ("norm", None),
)


def make_mesh(data: int = -1, tensor: int = 1, expert: int = 1, devices=None) -> jax.sharding.Mesh:
  """A (data, tensor, expert) mesh; `data=-1` takes every device left over.

  Raises:
    ValueError: the axis sizes do not multiply to the number of devices.
  """
  devices = list(devices if devices is not None else jax.devices())
  if data == -1:
    if len(devices) % (tensor * expert):
      raise ValueError(
        f"{len(devices)} devices do not split into tensor={tensor} x expert={expert}"
      )
    data = len(devices) // (tensor * expert)
  if data * tensor * expert != len(devices):
    raise ValueError(
      f"mesh data={data} x tensor={tensor} x expert={expert} needs {data * tensor * expert} "
      f"devices, have {len(devices)}"
    )
  auto = (jax.sharding.AxisType.Auto,) * 3
  return jax.make_mesh((data, tensor, expert), MESH_AXES, axis_types=auto, devices=devices)


def _mesh_spec(logical: PartitionSpec, shape: Sequence[int], mesh, rules) -> PartitionSpec:
  """Maps logical names to mesh axes, replicating a dim the mesh axis does not divide.

  Replication (instead of an error) matters for real models: SmolLM2 has 3 KV heads, which a
  tensor axis of 2 cannot split; those weights stay whole on every tensor shard.
  """
  physical = nn.logical_to_mesh_axes(logical, rules)
  axes = []
  for dim, axis in zip(shape, physical, strict=True):
    size = 1 if axis is None else mesh.shape[axis]
    axes.append(axis if size > 1 and dim % size == 0 else None)
  return PartitionSpec(*axes)


def param_shardings(config: ModelConfig, params, mesh, rules=LOGICAL_RULES):
  """NamedShardings for a params pytree of `config`."""
  return tree_shardings(logical_axes(config), params, mesh, rules)


def tree_shardings(specs, params, mesh, rules=LOGICAL_RULES):
  """NamedShardings for `params` from a matching pytree of logical PartitionSpecs."""
  return jax.tree.map(
    lambda spec, x: NamedSharding(mesh, _mesh_spec(spec, x.shape, mesh, rules)),
    specs,
    params,
    is_leaf=lambda x: isinstance(x, PartitionSpec),
  )


def shard_params(config: ModelConfig, params, mesh, rules=LOGICAL_RULES):
  return jax.device_put(params, param_shardings(config, params, mesh, rules))


def shard_drafter_params(drafter, params, mesh, rules=LOGICAL_RULES):
  """Shards a drafter's trainable params by the same logical rules as the target's.

  The frozen parts are the target's own arrays and keep the target's sharding (pass sharded
  target params to `frozen_parts`): sharding them here would copy them.
  """
  trainable = params["trainable"]
  placed = jax.device_put(trainable, tree_shardings(drafter.logical_axes(), trainable, mesh, rules))
  return {**params, "trainable": placed}


def shard_cache(cache: KVCache, mesh, rules=LOGICAL_RULES) -> KVCache:
  spec = lambda x: NamedSharding(mesh, _mesh_spec(PartitionSpec(*KV_AXES), x.shape, mesh, rules))
  rows = NamedSharding(mesh, _mesh_spec(PartitionSpec("batch"), cache.lengths.shape, mesh, rules))
  return KVCache(
    # Keys and values may differ in width (an MLA cache: latent and rotary key).
    keys=tuple(jax.device_put(k, spec(k)) for k in cache.keys),
    values=tuple(jax.device_put(v, spec(v)) for v in cache.values),
    lengths=jax.device_put(cache.lengths, rows),
  )


def shard_batch(x: jax.Array, mesh, rules=LOGICAL_RULES) -> jax.Array:
  """Splits the leading (batch) axis over the data axis; other axes replicated."""
  logical = PartitionSpec("batch", *([None] * (x.ndim - 1)))
  return jax.device_put(x, NamedSharding(mesh, _mesh_spec(logical, x.shape, mesh, rules)))
