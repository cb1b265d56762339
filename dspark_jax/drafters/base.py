"""The drafter protocol: every drafter (n-gram, draft model, DSpark, DFlash, Eagle3) speaks it.

The decode loop never knows which drafter it runs. A drafter is a frozen (hashable) object whose
methods are pure functions of (params, state, inputs); its state is a pytree that lives in the
loop's state.

Round structure, for one row: the target cache holds every committed token before the anchor
(the newest committed token, sitting at position `anchor_position`). `propose` drafts G tokens
for positions anchor_position + 1 .. + G. After verification, `commit` is told how many of them
were accepted (a); the committed tokens of the round are the anchor and the first a drafts, and
the token drawn by verification becomes the next anchor.
"""

from __future__ import annotations

from typing import Any, Protocol

import jax
from flax import struct

from dspark_jax.decoding.sampling import SamplingParams, filter_logits, token_keys

DRAFT_STREAM = 3  # fold-in tag: draft draws never reuse the target's random numbers


@struct.dataclass
class Proposal:
  tokens: jax.Array  # [B, G] int32
  logits: jax.Array  # [B, G, V] the exact raw logits each token was sampled from
  confidence: jax.Array | None = None  # [B, G] P(slot k survives | slots < k survived)
  # [B] int32: how many leading slots carry a real proposal (the n-gram drafter has none when
  # nothing matches). Decided before the target scores anything, so capping the verification
  # length with it keeps decoding lossless.
  num_valid: jax.Array | None = None


class Drafter(Protocol):
  """What the decode loop needs from a drafter."""

  draft_len: int  # G
  feature_layers: tuple[int, ...]  # target layers whose outputs `commit` wants (may be empty)

  def init_state(
    self,
    params: Any,
    prompt_features: jax.Array | None,
    prompt_tokens: jax.Array,
    prompt_lens: jax.Array,
    capacity: int,
  ) -> Any:
    """State after the prompt: tokens [B, P] right-padded, lengths [B]; capacity in tokens."""

  def propose(
    self,
    params: Any,
    state: Any,
    anchor_tokens: jax.Array,
    anchor_positions: jax.Array,
    sampling: SamplingParams,
    seed: jax.Array,
    request_ids: jax.Array,
  ) -> tuple[Proposal, Any]:
    """Drafts G tokens after each row's anchor; returns the proposal and the updated state."""

  def commit(
    self,
    params: Any,
    state: Any,
    proposal: Proposal,
    anchor_tokens: jax.Array,
    accepted_features: jax.Array | None,
    num_accepted: jax.Array,
  ) -> Any:
    """Keeps the anchor and the first num_accepted drafts; features are [B, G+1, m*D]."""


def sample_draft(logits_BxV: jax.Array, sampling: SamplingParams, seed, request_ids_B, positions_B):
  """Draws a draft token for each row from the filtered distribution (argmax when greedy)."""
  if sampling.greedy:
    return logits_BxV.argmax(-1).astype("int32")
  keys = token_keys(seed, request_ids_B, positions_B)
  keys = jax.vmap(lambda key: jax.random.fold_in(key, DRAFT_STREAM))(keys)
  weights = filter_logits(logits_BxV, sampling)
  return jax.vmap(jax.random.categorical)(keys, weights).astype("int32")
