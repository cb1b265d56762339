"""Mixture-of-experts MLP: routers (Qwen3-MoE softmax, DeepSeek-V3 grouped sigmoid), dropless
expert computation with `jax.lax.ragged_dot`, and two references beside it.

The expert path (`routed_experts`): the N x k (token, expert) assignments are sorted by expert,
the tokens gathered in that order, and each expert's contiguous run multiplied by its weights
with one grouped matmul per projection (`ragged_dot`, group sizes = tokens per expert), so no
token is dropped and no capacity is padded. The outputs are weighted and scattered back to their
tokens. `routed_experts_loop` (a Python loop over experts, the way HF transformers computes it)
and `routed_experts_dense` (every expert on every token, weighted by a dense routing matrix) are
the references the tests and `experiments/bench_moe.py` compare with.

Shapes: N tokens, D width, E experts, k experts per token, I expert width.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from dspark_jax.config import MoEConfig
from dspark_jax.models.layers import GatedMLP, _param


def route_softmax(logits_NxE: jax.Array, k: int, normalize: bool):
  """Qwen3-MoE: the k largest softmax probabilities (renormalised over the k when asked).
  Returns (weights [N, k] float32, experts [N, k] int32)."""
  probs = jax.nn.softmax(logits_NxE.astype(jnp.float32), axis=-1)
  weights, experts = jax.lax.top_k(probs, k)
  if normalize:
    weights = weights / jnp.sum(weights, axis=-1, keepdims=True)
  return weights, experts.astype(jnp.int32)


def route_grouped_sigmoid(logits_NxE, bias_E, moe: MoEConfig):
  """DeepSeek-V3: sigmoid scores; experts chosen by score + bias within the best groups; the
  weights are the chosen experts' unbiased scores (renormalised when asked) x routed_scale."""
  n, e = logits_NxE.shape
  scores = jax.nn.sigmoid(logits_NxE.astype(jnp.float32))
  biased = scores + bias_E.astype(jnp.float32)[None]
  if moe.num_groups > 1:
    grouped = biased.reshape(n, moe.num_groups, e // moe.num_groups)
    strength = jnp.sum(jax.lax.top_k(grouped, 2)[0], axis=-1)  # [N, groups]
    _, best = jax.lax.top_k(strength, moe.groups_per_token)
    keep = jnp.zeros((n, moe.num_groups), bool).at[jnp.arange(n)[:, None], best].set(True)
    keep = jnp.repeat(keep, e // moe.num_groups, axis=1)
    biased = jnp.where(keep, biased, -jnp.inf)
  _, experts = jax.lax.top_k(biased, moe.experts_per_token)
  weights = jnp.take_along_axis(scores, experts, axis=-1)
  if moe.normalize_weights:
    weights = weights / (jnp.sum(weights, axis=-1, keepdims=True) + 1e-20)
  return weights * moe.routed_scale, experts.astype(jnp.int32)


def _act(x, activation: str):
  return jax.nn.silu(x) if activation == "silu" else jax.nn.gelu(x, approximate=True)


def routed_experts(x_NxD, weights_Nxk, experts_Nxk, gate_ExDxI, up_ExDxI, down_ExIxD, activation):
  """The dropless grouped-matmul path: [N, D]."""
  n, k = experts_Nxk.shape
  num_experts = gate_ExDxI.shape[0]
  flat_expert = experts_Nxk.reshape(-1)
  order = jnp.argsort(flat_expert, stable=True)  # assignments grouped by expert
  token = order // k
  sizes = jnp.bincount(flat_expert, length=num_experts).astype(jnp.int32)
  xs = x_NxD[token]
  dt = x_NxD.dtype
  h = _act(jax.lax.ragged_dot(xs, gate_ExDxI.astype(dt), sizes), activation)
  h = h * jax.lax.ragged_dot(xs, up_ExDxI.astype(dt), sizes)
  y = jax.lax.ragged_dot(h, down_ExIxD.astype(dt), sizes)
  y = y * weights_Nxk.reshape(-1)[order][:, None].astype(dt)
  return jnp.zeros_like(x_NxD).at[token].add(y)


def routed_experts_loop(x_NxD, weights_Nxk, experts_Nxk, gate, up, down, activation):
  """Reference: expert by expert, each on the tokens routed to it (a Python loop, eager)."""
  out = jnp.zeros_like(x_NxD)
  for e in range(gate.shape[0]):
    w = jnp.sum(jnp.where(experts_Nxk == e, weights_Nxk, 0.0), axis=-1)  # [N]
    y = (_act(x_NxD @ gate[e], activation) * (x_NxD @ up[e])) @ down[e]
    out = out + w[:, None].astype(x_NxD.dtype) * y
  return out


def routed_experts_dense(x_NxD, weights_Nxk, experts_Nxk, gate, up, down, activation):
  """Every expert on every token, combined with the dense [N, E] routing matrix."""
  num_experts = gate.shape[0]
  combine = jnp.sum(jax.nn.one_hot(experts_Nxk, num_experts) * weights_Nxk[..., None], axis=1)
  h = _act(jnp.einsum("nd,edi->nei", x_NxD, gate), activation)
  h = h * jnp.einsum("nd,edi->nei", x_NxD, up)
  y = jnp.einsum("nei,eid->ned", h, down)
  return jnp.einsum("ned,ne->nd", y, combine.astype(x_NxD.dtype))


EXPERT_PATHS = {
  "ragged": routed_experts,
  "loop": routed_experts_loop,
  "dense": routed_experts_dense,
}


class MoEMLP(nn.Module):
  """Router + routed experts (+ shared experts), in place of `GatedMLP`."""

  moe: MoEConfig
  activation: str
  dtype: str
  path: str = "ragged"

  @nn.compact
  def __call__(self, x_BxTxD):
    """x [..., D] (any leading axes: [B, T, D] in targets, [B, A, G, D] in drafters)."""
    m = self.moe
    *lead, d = x_BxTxD.shape
    x = x_BxTxD.reshape(-1, d)
    router = _param(self, "router", (d, m.num_experts), ("embed", "expert"))
    logits = x.astype(jnp.float32) @ router
    if m.router == "softmax":
      weights, experts = route_softmax(logits, m.experts_per_token, m.normalize_weights)
    else:
      bias = _param(self, "router_bias", (m.num_experts,), ("expert",), nn.initializers.zeros)
      weights, experts = route_grouped_sigmoid(logits, bias, m)
    shape = (m.num_experts, d, m.expert_size)
    gate = _param(self, "gate_proj", shape, ("expert", "embed", "mlp"))
    up = _param(self, "up_proj", shape, ("expert", "embed", "mlp"))
    down = _param(self, "down_proj", (m.num_experts, m.expert_size, d), ("expert", "mlp", "embed"))
    out = EXPERT_PATHS[self.path](x, weights, experts, gate, up, down, self.activation)
    out = out.reshape(*lead, d)
    if m.num_shared_experts:
      shared = GatedMLP(
        m.expert_size * m.num_shared_experts, self.activation, self.dtype, name="shared"
      )
      out = out + shared(x_BxTxD)
    return out
