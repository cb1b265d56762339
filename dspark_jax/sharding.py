"""Device meshes and the logical-axis -> mesh-axis rules.

Model code names logical axes only (`batch`, `vocab`, `embed`, `heads`, `kv_heads`, `head_dim`,
`mlp`, `length`, `norm`, `expert`); this module is the one place that maps them onto physical
mesh axes (`data`, `fsdp`, `tensor`, `expert`).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
from flax import linen as nn
from jax.sharding import NamedSharding, PartitionSpec

from dspark_jax.config import ModelConfig
from dspark_jax.models.kv_cache import KV_AXES, KVCache
from dspark_jax.models.transformer import logical_axes

MESH_AXES = ("data", "fsdp", "tensor", "expert")

# Data parallel over the batch; Megatron-style tensor parallel over heads, MLP width and vocab.
LOGICAL_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
  # The batch splits over data and fsdp; fsdp also splits every weight along its model width
  # (ZeRO-3 style: XLA gathers a layer's weights where they are used).
  ("batch", ("data", "fsdp")),
  ("vocab", "tensor"),
  ("heads", "tensor"),
  ("kv_heads", "tensor"),
  ("mlp", "tensor"),
  ("expert", "expert"),
  ("embed", "fsdp"),
  ("head_dim", None),
  ("q_lora", None),  # MLA's low-rank query and key/value bottlenecks stay whole
  ("kv_lora", None),
  ("length", None),
  ("norm", None),
)


def make_mesh(
  data: int = -1, tensor: int = 1, expert: int = 1, fsdp: int = 1, devices=None
) -> jax.sharding.Mesh:
  """A (data, fsdp, tensor, expert) mesh; `data=-1` takes every device left over.

  Raises:
    ValueError: the axis sizes do not multiply to the number of devices.
  """
  devices = list(devices if devices is not None else jax.devices())
  model = fsdp * tensor * expert
  if data == -1:
    if len(devices) % model:
      raise ValueError(
        f"{len(devices)} devices do not split into fsdp={fsdp} x tensor={tensor} x expert={expert}"
      )
    data = len(devices) // model
  if data * model != len(devices):
    raise ValueError(
      f"mesh data={data} x fsdp={fsdp} x tensor={tensor} x expert={expert} needs "
      f"{data * model} devices, have {len(devices)}"
    )
  auto = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)
  return jax.make_mesh((data, fsdp, tensor, expert), MESH_AXES, axis_types=auto, devices=devices)


def _mesh_spec(logical: PartitionSpec, shape: Sequence[int], mesh, rules) -> PartitionSpec:
  """Maps logical names to mesh axes, replicating a dim the mesh axis does not divide.

  Replication (instead of an error) matters for real models: SmolLM2 has 3 KV heads, which a
  tensor axis of 2 cannot split; those weights stay whole on every tensor shard.
  """
  physical = nn.logical_to_mesh_axes(logical, rules)
  axes = []
  for dim, axis in zip(shape, physical, strict=True):
    # A dim may map to several mesh axes (the batch over data and fsdp): keep those of size > 1
    # while they divide it.
    names = () if axis is None else (axis,) if isinstance(axis, str) else tuple(axis)
    kept, size = [], 1
    for name in names:
      if mesh.shape[name] > 1 and dim % (size * mesh.shape[name]) == 0:
        kept.append(name)
        size *= mesh.shape[name]
    axes.append(None if not kept else kept[0] if len(kept) == 1 else tuple(kept))
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
  """Splits the leading (batch) axis over the data and fsdp axes; other axes replicated."""
  logical = PartitionSpec("batch", *([None] * (x.ndim - 1)))
  return jax.device_put(x, NamedSharding(mesh, _mesh_spec(logical, x.shape, mesh, rules)))
