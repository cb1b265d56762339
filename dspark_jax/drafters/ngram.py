"""Prompt-lookup (n-gram) drafter: copy what followed the latest earlier occurrence of the
last n tokens (prompt and generated text alike). No parameters, no training.

Its draft distribution is one-hot (logits 0 at the proposed token, -inf elsewhere); lossless
verification must and does handle that exactly: p_d(x) = 1, so x is accepted with probability
p_t(x) and a rejection resamples from p_t with x removed.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from dspark_jax.drafters.base import Proposal


@struct.dataclass
class NgramState:
  tokens: jax.Array  # [B, C] committed tokens (prompt + generated, without the anchor)
  lengths: jax.Array  # [B] int32


@dataclasses.dataclass(frozen=True)
class NgramDrafter:
  """Tries n = max_ngram down to min_ngram; the longest n that matches wins.

  Among matches of that n, the latest one with G known tokens after it is used (recent text
  predicts best); if none has G, the earliest (it has the most known continuation).
  """

  draft_len: int
  vocab_size: int
  max_ngram: int = 3
  min_ngram: int = 2  # single-token matches predict too poorly to pay for a verification
  feature_layers: tuple[int, ...] = ()

  def __post_init__(self):
    if self.draft_len < 1:
      raise ValueError(f"draft_len (G) must be >= 1, got {self.draft_len}")
    if not 1 <= self.min_ngram <= self.max_ngram:
      raise ValueError(f"need 1 <= min_ngram <= max_ngram, got {self.min_ngram}, {self.max_ngram}")

  def init_state(self, params, prompt_features, prompt_tokens, prompt_lens, capacity: int):
    del params, prompt_features
    batch, width = prompt_tokens.shape
    tokens = jnp.zeros((batch, capacity + 1), jnp.int32).at[:, :width].set(prompt_tokens)
    return NgramState(tokens, prompt_lens.astype(jnp.int32))

  def propose(self, params, state, anchor_tokens, anchor_positions, sampling, seed, request_ids):
    del params, anchor_positions, sampling, seed, request_ids
    seq = jax.vmap(lambda row, n, a: row.at[n].set(a))(state.tokens, state.lengths, anchor_tokens)
    tokens, num_valid = jax.vmap(self._lookup)(seq, state.lengths)
    one_hot = jnp.arange(self.vocab_size)[None, None, :] == tokens[:, :, None]
    logits = jnp.where(one_hot, 0.0, -jnp.inf).astype(jnp.float32)
    return Proposal(tokens, logits, None, num_valid), state

  def _lookup(self, seq_C: jax.Array, anchor_index: jax.Array):
    """Continuation of the latest earlier match of the n tokens ending at the anchor."""
    c = seq_C.shape[0]
    idx = jnp.arange(c)
    best_end = jnp.int32(-1)
    for n in range(self.max_ngram, self.min_ngram - 1, -1):
      match = (idx >= n - 1) & (idx < anchor_index)
      for i in range(n):
        query = seq_C[jnp.maximum(anchor_index - i, 0)]
        match &= jnp.roll(seq_C, i)[idx] == query
      match &= anchor_index - n + 1 >= 0  # the query itself must exist
      latest_full = jnp.max(jnp.where(match & (idx <= anchor_index - self.draft_len), idx, -1))
      earliest = jnp.min(jnp.where(match, idx, c))
      end = jnp.where(latest_full >= 0, latest_full, jnp.where(earliest < c, earliest, -1))
      best_end = jnp.where(best_end < 0, end, best_end)
    found = best_end >= 0
    take = jnp.clip(best_end + 1 + jnp.arange(self.draft_len), 0, c - 1)
    tokens = seq_C[take]
    # Only tokens up to and including the anchor are known.
    num_valid = jnp.where(found, jnp.minimum(self.draft_len, anchor_index - best_end), 0)
    return tokens.astype(jnp.int32), num_valid.astype(jnp.int32)

  def commit(self, params, state, proposal, anchor_tokens, accepted_features, num_accepted):
    del params, accepted_features
    block = jnp.concatenate([anchor_tokens[:, None], proposal.tokens], axis=1)
    tokens = jax.vmap(lambda row, new, n: jax.lax.dynamic_update_slice(row, new, (n,)))(
      state.tokens, block, state.lengths
    )
    return NgramState(tokens, state.lengths + 1 + num_accepted)
