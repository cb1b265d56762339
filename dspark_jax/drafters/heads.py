"""DSpark's sequential heads and confidence head (`docs/method.md`, section 2).

The sequential head adds a bias B_k [V] to the backbone's logits U_k at block slot k, computed
from the previous token x_{k-1} (x_0 is the anchor) and, for the gated and RNN heads, from the
slot's hidden state h_k. The draft distribution softmax(U_k + B_k) stays an exact softmax. One
`step` serves training (previous token = ground truth) and inference (previous token = the
sample just drawn), so the two modes cannot drift apart.

Letters: D model width, R head rank r, V vocabulary. Parameter layouts are ours ([in, out]);
`dspark_jax.io.deepspec` converts to torch's [out, in].
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from dspark_jax.models.layers import _param

_ZEROS = nn.initializers.zeros


class SequentialHead(nn.Module):
  """The token table W1 [V, R] and, unless kind is "none", the head producing B_k.

  kinds: "markov" B = W2 W1[x]; "gated" B = W2 (sigmoid(G [h; W1[x]] + g) * W1[x]);
  "rnn" z = [s; W1[x]; h], (gate, candidate, output) = split(J z + j),
  s' = sigmoid(gate) * s + (1 - sigmoid(gate)) * tanh(candidate), B = W2 tanh(output).
  With kind "none" only W1 exists (for a confidence head that reads it).
  """

  kind: str
  vocab_size: int
  hidden_size: int
  rank: int
  out_size: int | None = None  # width of B_k: the draft vocabulary N (default: vocab_size)

  def setup(self):
    v, d, r = self.vocab_size, self.hidden_size, self.rank
    # W1 is indexed by previous tokens, which are target ids; W2 writes draft-space logits.
    self.markov_w1 = _param(self, "markov_w1", (v, r), ("vocab", None))
    if self.kind == "none":
      return
    self.markov_w2 = _param(self, "markov_w2", (r, self.out_size or v), (None, "vocab"))
    if self.kind == "gated":
      self.gate_kernel = _param(self, "gate_kernel", (d + r, r), ("embed", None))
      self.gate_bias = _param(self, "gate_bias", (r,), (None,), _ZEROS)
    elif self.kind == "rnn":
      self.joint_kernel = _param(self, "joint_kernel", (2 * r + d, 3 * r), ("embed", None))
      self.joint_bias = _param(self, "joint_bias", (3 * r,), (None,), _ZEROS)

  def initial_state(self, batch_shape) -> jax.Array:
    """The RNN state s_0 = 0 ([..., R]); an empty [..., 0] array for stateless heads."""
    return jnp.zeros((*batch_shape, self.rank if self.kind == "rnn" else 0), jnp.float32)

  def token_features(self, prev_tokens: jax.Array) -> jax.Array:
    """W1[x_{k-1}]: [...] int -> [..., R] float32."""
    return jnp.take(self.markov_w1, prev_tokens, axis=0).astype(jnp.float32)

  def __call__(self, h_k, prev_tokens, state):
    """One slot: (h_k [..., D], x_{k-1} [...], state [..., R or 0]) -> (B_k [..., N] | None,
    W1[x_{k-1}] [..., R], next state)."""
    w1x = self.token_features(prev_tokens)
    h = h_k.astype(jnp.float32)
    if self.kind == "none":
      return None, w1x, state
    if self.kind == "markov":
      mixed = w1x
    elif self.kind == "gated":
      gate = jax.nn.sigmoid(jnp.concatenate([h, w1x], -1) @ self.gate_kernel + self.gate_bias)
      mixed = gate * w1x
    else:  # rnn
      z = jnp.concatenate([state, w1x, h], -1) @ self.joint_kernel + self.joint_bias
      gate, candidate, output = jnp.split(z, 3, axis=-1)
      gate = jax.nn.sigmoid(gate)
      state = gate * state + (1.0 - gate) * jnp.tanh(candidate)
      mixed = jnp.tanh(output)
    return mixed @ self.markov_w2, w1x, state


class ConfidenceHead(nn.Module):
  """c_k = sigmoid(w . [h_k ; W1[x_{k-1}]] + b), or w . h_k + b without the token table.

  Returns the logit; c_k estimates P(slot k survives verification | slots < k survived).
  """

  with_token: bool

  @nn.compact
  def __call__(self, h_k, w1x):
    x = h_k.astype(jnp.float32)
    if self.with_token:
      x = jnp.concatenate([x, w1x], -1)
    w = _param(self, "kernel", (x.shape[-1], 1), ("embed", None))
    b = _param(self, "bias", (1,), (None,), _ZEROS)
    return (x @ w + b)[..., 0]
