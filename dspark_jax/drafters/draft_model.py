"""An independent draft model: any target-family model drafting autoregressively.

Examples: SmolLM2 truncated to its first layers, a small model of the same tokenizer, or a tiny
random model in tests. It keeps its own KV cache of the committed tokens; rolling back rejected
drafts is setting the cache length, as for the target.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from dspark_jax.config import ModelConfig
from dspark_jax.drafters.base import Proposal, sample_draft
from dspark_jax.models.kv_cache import KVCache
from dspark_jax.models.transformer import forward


@dataclasses.dataclass(frozen=True)
class DraftModelDrafter:
  config: ModelConfig
  draft_len: int
  feature_layers: tuple[int, ...] = ()

  def __post_init__(self):
    if self.draft_len < 1:
      raise ValueError(f"draft_len (G) must be >= 1, got {self.draft_len}")

  @property
  def vocab_size(self) -> int:
    return self.config.vocab_size

  def init_state(self, params, prompt_features, prompt_tokens, prompt_lens, capacity: int):
    del prompt_features
    batch, width = prompt_tokens.shape
    cache = KVCache.create(self.config, batch, capacity)
    positions = jnp.broadcast_to(jnp.arange(width, dtype=jnp.int32), (batch, width))
    cache = forward(params, prompt_tokens, positions, cache, config=self.config).cache
    return cache.with_lengths(prompt_lens)

  def propose(self, params, state, anchor_tokens, anchor_positions, sampling, seed, request_ids):
    """G forwards of one token: the anchor, then each draft; the cache grows by G."""

    def step(carry, k):
      cache, token = carry
      out = forward(
        params, token[:, None], (anchor_positions + k)[:, None], cache, config=self.config
      )
      logits = out.logits[:, 0]
      new = sample_draft(logits, sampling, seed, request_ids, anchor_positions + k + 1)
      return (out.cache, new), (new, logits)

    (cache, _), (tokens, logits) = jax.lax.scan(
      step, (state, anchor_tokens), jnp.arange(self.draft_len)
    )
    return Proposal(tokens.T, logits.transpose(1, 0, 2)), cache

  def commit(self, params, state, proposal, anchor_tokens, accepted_features, num_accepted):
    """Keeps anchor + accepted drafts; the last draft was never fed, so feed it if accepted."""
    del anchor_tokens, accepted_features
    g = self.draft_len
    start = state.lengths - g  # where the anchor sits

    def feed_last(cache):
      last = proposal.tokens[:, g - 1]
      return forward(params, last[:, None], (start + g)[:, None], cache, config=self.config).cache

    cache = jax.lax.cond(jnp.any(num_accepted == g), feed_last, lambda c: c, state)
    return cache.with_lengths(start + 1 + num_accepted)
