"""Expert parallelism: the routed experts with tokens exchanged between the devices that hold
the experts (`jax.shard_map` over the mesh's `expert` axis).

Each of the P devices holds N/P tokens and E/P experts. A device routes its tokens, sends every
(token, expert) assignment to the device holding that expert, which runs its experts on what it
received (the grouped `ragged_dot` of `models/moe.py`), and sends the outputs back, where they
are weighted and summed per token. The result equals the single-device computation.

The exchange is chosen at one dispatch point (`exchange_kind`). `dense`: a fixed-size
`all_to_all` whose per-destination buffer holds every local assignment (N/P x k rows), so no
token is ever dropped whatever the routing; it runs everywhere, CPU included, at P times the
volume a ragged exchange needs. A ragged exchange (`jax.lax.ragged_all_to_all`, TPU/GPU only:
XLA:CPU does not implement it) is **planned**; until it lands every platform takes the dense
exchange.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from dspark_jax.models.moe import _act


def exchange_kind(platform: str | None = None) -> str:
  """The one dispatch point for the token exchange (see the module docstring)."""
  del platform  # the ragged exchange is planned for "tpu" and "gpu"
  return "dense"


def _local_experts(x_MxD, local_expert_M, gate, up, down, activation):
  """Rows x with local expert ids (-1 = an empty buffer row, output 0): [M, D]."""
  m = x_MxD.shape[0]
  num_local = gate.shape[0]
  key = jnp.where(local_expert_M < 0, num_local, local_expert_M)
  order = jnp.argsort(key, stable=True)
  sizes = jnp.bincount(key, length=num_local + 1)[:num_local].astype(jnp.int32)
  xs = x_MxD[order]
  h = _act(jax.lax.ragged_dot(xs, gate, sizes), activation) * jax.lax.ragged_dot(xs, up, sizes)
  y = jax.lax.ragged_dot(h, down, sizes)
  y = jnp.where((key[order] < num_local)[:, None], y, 0.0)  # rows past the groups: empty
  return jnp.zeros((m, x_MxD.shape[1]), y.dtype).at[order].set(y)


def routed_experts_sharded(
  x_NxD,
  weights_Nxk,
  experts_Nxk,
  gate_ExDxI,
  up_ExDxI,
  down_ExIxD,
  activation,
  *,
  mesh,
  axis: str = "expert",
):
  """`moe.routed_experts` with tokens (axis 0 of x, weights, experts) and experts (axis 0 of
  the three weight stacks) sharded over `axis`. N and E must divide by the axis size."""
  p = mesh.shape[axis]
  num_experts = gate_ExDxI.shape[0]
  if num_experts % p or x_NxD.shape[0] % p:
    raise ValueError(
      f"{num_experts} experts and {x_NxD.shape[0]} tokens must both split over the {p} devices "
      f"of mesh axis {axis!r}"
    )
  per_device = num_experts // p

  def body(x, w, ex, gate, up, down):
    n, k = ex.shape
    d = x.shape[-1]
    flat_expert = ex.reshape(-1)
    dest = flat_expert // per_device
    order = jnp.argsort(dest, stable=True)
    dest_sorted = dest[order]
    counts = jnp.bincount(dest, length=p)
    rank = jnp.arange(n * k) - (jnp.cumsum(counts) - counts)[dest_sorted]
    capacity = n * k  # every assignment could go to one device: never dropped
    token = order // k
    send_x = jnp.zeros((p, capacity, d), x.dtype).at[dest_sorted, rank].set(x[token])
    local_id = flat_expert[order] - dest_sorted * per_device
    send_e = jnp.full((p, capacity), -1, jnp.int32).at[dest_sorted, rank].set(local_id)
    recv_x = jax.lax.all_to_all(send_x, axis, 0, 0, tiled=True)
    recv_e = jax.lax.all_to_all(send_e, axis, 0, 0, tiled=True)
    y = _local_experts(
      recv_x.reshape(p * capacity, d), recv_e.reshape(-1), gate, up, down, activation
    )
    back = jax.lax.all_to_all(y.reshape(p, capacity, d), axis, 0, 0, tiled=True)
    y_sorted = back[dest_sorted, rank] * w.reshape(-1)[order][:, None].astype(back.dtype)
    return jnp.zeros((n, d), back.dtype).at[token].add(y_sorted)

  spec = P(axis)
  return jax.shard_map(body, mesh=mesh, in_specs=(spec,) * 6, out_specs=spec, check_vma=False)(
    x_NxD, weights_Nxk, experts_Nxk, gate_ExDxI, up_ExDxI, down_ExIxD
  )
