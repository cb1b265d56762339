"""Verify only the first slots of another drafter's proposals (a static proposal length).

A block drafter trained for G slots always drafts all G in one pass, but the target's
verification forward costs more with every slot it scores: on a CPU, 8 tokens cost about 2.4
one-token steps (BENCHMARKS.md). When later slots are rarely accepted, verifying fewer of them
buys speed. `PrefixDrafter(inner, g)` is a drafter with G = g whose proposal is the first g
tokens of `inner`'s, with the same logits; it is lossless for the same reason every drafter is
(verification accepts any proposal with the rejection rule), and the target's verification
block shrinks to g + 1 tokens. Drafters with a `propose_prefix` (DSpark, DFlash) also skip the
LM head, the sequential head and the draws of the slots that are cut.

Unlike loading a block drafter with a smaller block size, this keeps the proposals themselves
unchanged: a block drafter's slots attend to each other, so a shorter block drafts different
tokens.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from dspark_jax.drafters.base import Proposal


@dataclasses.dataclass(frozen=True)
class PrefixDrafter:
  inner: Any  # any drafter of the protocol in drafters.base
  draft_len: int  # g, 1 <= g <= inner.draft_len

  def __post_init__(self):
    if not 1 <= self.draft_len <= self.inner.draft_len:
      raise ValueError(
        f"a prefix of a {self.inner.draft_len}-slot proposal needs 1 <= g <= "
        f"{self.inner.draft_len}, got {self.draft_len}"
      )

  @property
  def feature_layers(self) -> tuple[int, ...]:
    return self.inner.feature_layers

  @property
  def vocab_size(self) -> int:
    return self.inner.vocab_size

  @property
  def config(self):
    return self.inner.config

  def init_state(self, params, prompt_features, prompt_tokens, prompt_lens, capacity):
    return self.inner.init_state(params, prompt_features, prompt_tokens, prompt_lens, capacity)

  def propose(self, params, state, anchor_tokens, anchor_positions, sampling, seed, request_ids):
    g = self.draft_len
    args = (params, state, anchor_tokens, anchor_positions, sampling, seed, request_ids)
    if hasattr(self.inner, "propose_prefix"):  # drafts only the g slots (block drafters)
      return self.inner.propose_prefix(*args, g)
    full, state = self.inner.propose(*args)
    cut = Proposal(
      full.tokens[:, :g],
      full.logits[:, :g],
      None if full.confidence is None else full.confidence[:, :g],
      None if full.num_valid is None else jnp.minimum(full.num_valid, g),
    )
    return cut, state

  def commit(self, params, state, proposal, anchor_tokens, accepted_features, num_accepted):
    """The inner drafter's commit, its G-slot inputs padded: at most g drafts were accepted,
    and commits keep only the anchor and the accepted drafts, so the padding is never kept."""
    pad = self.inner.draft_len - self.draft_len
    tokens = jnp.pad(proposal.tokens, ((0, 0), (0, pad)))
    if accepted_features is not None:
      accepted_features = jnp.pad(accepted_features, ((0, 0), (0, pad), (0, 0)))
    full = Proposal(tokens, proposal.logits, proposal.confidence, proposal.num_valid)
    return self.inner.commit(params, state, full, anchor_tokens, accepted_features, num_accepted)
