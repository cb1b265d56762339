"""Expert parallelism: the routed experts with tokens exchanged between the devices that hold
the experts (`jax.shard_map` over the mesh's `expert` axis).

Each of the P devices holds N/P tokens and E/P experts. A device routes its tokens, sends every
(token, expert) assignment to the device holding that expert, which runs its experts on what it
received (the grouped `ragged_dot` of `models/moe.py`), and sends the outputs back, where they
are weighted and summed per token. The result equals the single-device computation.

The exchange is chosen at one dispatch point (`exchange_kind`):
- `dense` (CPU): a fixed-size `all_to_all` whose per-destination buffer holds every local
  assignment (N/P x k rows), so no token is ever dropped whatever the routing; it runs
  everywhere, at P times the volume the routing needs.
- `ragged` (TPU, GPU): `jax.lax.ragged_all_to_all` sends each destination exactly its
  assignments (offsets and sizes from one all-gather of the P x P send counts) and returns the
  outputs the same way. XLA:CPU does not implement the primitive, so the CPU tests run this
  path's bookkeeping through `ragged_all_to_all_emulated` (the primitive's documented semantics
  built from all-gathers); the primitive itself is exercised only on TPU/GPU.
Both are dropless: a device's receive buffer has room for every assignment of every device
(P x N/P x k rows), the worst case. A capacity factor would shrink it but drop tokens.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from dspark_jax.models.moe import _act


def exchange_kind(platform: str | None = None) -> str:
  """The one dispatch point for the token exchange (see the module docstring)."""
  platform = platform or jax.default_backend()
  return "ragged" if platform in ("tpu", "gpu", "cuda", "rocm") else "dense"


def ragged_all_to_all_emulated(
  operand, output, input_offsets, send_sizes, output_offsets, recv_sizes, *, axis_name
):
  """`jax.lax.ragged_all_to_all`'s documented semantics from all-gathers, for one slice per
  destination (offset/size arrays of length P): device i's rows [input_offsets[j],
  + send_sizes[j]) land on device j at output_offsets[j]. For testing the ragged exchange's
  bookkeeping where the primitive is not implemented (XLA:CPU); P times the traffic."""
  del recv_sizes  # implied by the senders' sizes
  me = jax.lax.axis_index(axis_name)
  gather = lambda a: jax.lax.all_gather(a, axis_name)
  sources, starts, sizes, dests = map(gather, (operand, input_offsets, send_sizes, output_offsets))
  rows = jnp.arange(operand.shape[0])
  result = output
  for i in range(sources.shape[0]):
    start, size, dest = starts[i, me], sizes[i, me], dests[i, me]
    inside = (rows >= start) & (rows < start + size)
    target = jnp.where(inside, dest + rows - start, output.shape[0])  # outside: dropped
    result = result.at[target].set(sources[i], mode="drop")
  return result


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


def _dense_exchange(x, w, ex, gate, up, down, *, axis, p, activation):
  n, k = ex.shape
  d = x.shape[-1]
  per_device = gate.shape[0]
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


def _ragged_exchange(x, w, ex, gate, up, down, *, axis, p, activation, ragged_all_to_all):
  n, k = ex.shape
  d, m = x.shape[-1], n * k
  per_device = gate.shape[0]
  flat_expert = ex.reshape(-1)
  dest = flat_expert // per_device
  order = jnp.argsort(dest, stable=True)  # assignments grouped by destination device
  token = order // k
  send_sizes = jnp.bincount(dest, length=p).astype(jnp.int32)
  input_offsets = jnp.cumsum(send_sizes) - send_sizes
  counts_PxP = jax.lax.all_gather(send_sizes, axis)  # [source, destination]
  me = jax.lax.axis_index(axis)
  recv_sizes = counts_PxP[:, me]
  # A receiver lays its buffer out by source: my slice goes after those of lower sources.
  earlier = jnp.arange(p) < me
  output_offsets = jnp.sum(jnp.where(earlier[:, None], counts_PxP, 0), axis=0).astype(jnp.int32)
  capacity = p * m  # every device could send me all its assignments: never dropped
  exchange = partial(ragged_all_to_all, axis_name=axis)
  there = (input_offsets, send_sizes, output_offsets, recv_sizes)
  recv_x = exchange(x[token], jnp.zeros((capacity, d), x.dtype), *there)
  local_id = (flat_expert[order] - dest[order] * per_device).astype(jnp.int32)
  recv_e = exchange(local_id, jnp.full((capacity,), -1, jnp.int32), *there)
  y = _local_experts(recv_x, recv_e, gate, up, down, activation)
  # Back: each source's rows return to where it sent them from (its offset for me).
  recv_offsets = (jnp.cumsum(recv_sizes) - recv_sizes).astype(jnp.int32)
  back_offsets = jnp.sum(jnp.where(earlier[None, :], counts_PxP, 0), axis=1).astype(jnp.int32)
  back = exchange(y, jnp.zeros((m, d), y.dtype), recv_offsets, recv_sizes, back_offsets, send_sizes)
  y_sorted = back * w.reshape(-1)[order][:, None].astype(back.dtype)
  return jnp.zeros((n, d), back.dtype).at[token].add(y_sorted)


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
  exchange: str | None = None,
):
  """`moe.routed_experts` with tokens (axis 0 of x, weights, experts) and experts (axis 0 of
  the three weight stacks) sharded over `axis`. N and E must divide by the axis size.

  exchange: "dense", "ragged", "ragged-emulated" (the ragged bookkeeping over the emulated
  primitive, for CPU tests) or None for `exchange_kind()`'s choice.
  """
  p = mesh.shape[axis]
  num_experts = gate_ExDxI.shape[0]
  if num_experts % p or x_NxD.shape[0] % p:
    raise ValueError(
      f"{num_experts} experts and {x_NxD.shape[0]} tokens must both split over the {p} devices "
      f"of mesh axis {axis!r}"
    )
  kind = exchange or exchange_kind()
  if kind == "dense":
    body = partial(_dense_exchange, axis=axis, p=p, activation=activation)
  elif kind in ("ragged", "ragged-emulated"):
    primitive = jax.lax.ragged_all_to_all if kind == "ragged" else ragged_all_to_all_emulated
    body = partial(
      _ragged_exchange, axis=axis, p=p, activation=activation, ragged_all_to_all=primitive
    )
  else:
    raise ValueError(f"exchange must be dense, ragged or ragged-emulated, got {exchange!r}")
  spec = P(axis)
  return jax.shard_map(body, mesh=mesh, in_specs=(spec,) * 6, out_specs=spec, check_vma=False)(
    x_NxD, weights_Nxk, experts_Nxk, gate_ExDxI, up_ExDxI, down_ExIxD
  )
