"""DSpark: a parallel block backbone, a sequential head and a confidence head.

`docs/method.md` section 2 has the method. Slot k of the block anchored at position a
has position a + k, takes the anchor (k = 0) or the mask token as input, and predicts the
token at a + k + 1. The draft distribution at slot k is softmax(U_k + B_k), U_k the backbone's
logits through the target's frozen LM head, B_k the sequential head's bias.

Two modes over the same parameters:
  * `train_forward`: many anchor blocks of one sequence at once; the context keys/values are
    computed once per layer and shared by every block; the head is teacher-forced.
  * the drafter protocol (`init_state`, `propose`, `commit`): one block per row after its
    anchor; the context keys/values live in a KV cache that grows by the committed tokens'
    target features.

DFlash is this module with head "none" and no confidence head (`dspark_jax.drafters.dflash`).
Letters: B batch, T sequence, A anchor blocks, G block slots, S context slots, F = m * D
feature width, D width, V vocabulary, R head rank.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import linen as nn

from dspark_jax.config import DraftConfig, ModelConfig
from dspark_jax.drafters.backbone import DraftLayer
from dspark_jax.drafters.base import Proposal, sample_draft
from dspark_jax.drafters.draft_vocab import draft_logits, to_target_vocab
from dspark_jax.drafters.heads import ConfidenceHead, SequentialHead
from dspark_jax.drafters.shared import embed
from dspark_jax.drafters.trained import TrainedDrafter
from dspark_jax.models.kv_cache import KVCache, write_rows
from dspark_jax.models.layers import RMSNorm, _param, prefix_bucket_index, prefix_buckets


class BlockModel(nn.Module):
  """The trainable part of DSpark/DFlash (embedding and LM head are passed in, frozen)."""

  draft: DraftConfig
  target: ModelConfig

  def setup(self):
    c = self.draft.backbone_config(self.target)
    self.backbone = c
    m, d = len(self.draft.target_layer_ids), c.hidden_size
    self.fc = _param(self, "fc", (m * d, d), (None, "embed"))
    self.hidden_norm = RMSNorm(c.rms_eps, 0.0, c.dtype)
    self.layers = [DraftLayer(c, i) for i in range(c.num_layers)]
    self.final_norm = RMSNorm(c.rms_eps, 0.0, c.dtype)
    if self.draft.uses_token_table:
      self.markov_head = SequentialHead(
        self.draft.head,
        c.vocab_size,
        c.hidden_size,
        self.draft.markov_rank,
        self.draft.draft_vocab(self.target),
      )
    if self.draft.confidence_head:
      self.confidence_head = ConfidenceHead(self.draft.confidence_with_markov)

  def context_kv(self, features_BxSxF, positions_BxS):
    """Per layer (keys, values) [B, N, S, K] of the context H_ctx = norm(features @ W_c)."""
    dt = self.backbone.dtype
    h_ctx = self.hidden_norm(features_BxSxF.astype(dt) @ self.fc.astype(dt))
    return tuple(layer.context_kv(h_ctx, positions_BxS) for layer in self.layers)

  def block_hidden(self, x_BxAxGxD, positions_BxAxG, ctx_kv, ctx_visible_BxAxS):
    """Final-normed block hidden states h [B, A, G, D]."""
    x = x_BxAxGxD
    for layer, kv in zip(self.layers, ctx_kv, strict=True):
      x = layer(x, positions_BxAxG, kv, ctx_visible_BxAxS)
    return self.final_norm(x)

  def initial_head_state(self, batch_shape):
    if not self.draft.uses_token_table:
      return jnp.zeros((*batch_shape, 0), jnp.float32)
    return self.markov_head.initial_state(batch_shape)

  def head_step(self, h_k, prev_tokens, state):
    """(h_k [..., D], x_{k-1} [...], state) -> (bias [..., V] | None, confidence logit [...] |
    None, next state)."""
    bias, w1x = None, None
    if self.draft.uses_token_table:
      bias, w1x, state = self.markov_head(h_k, prev_tokens, state)
    conf = self.confidence_head(h_k, w1x) if self.draft.confidence_head else None
    return bias, conf, state

  def __call__(self, features_BxSxF, positions_BxS, x_BxAxGxD, positions_BxAxG, visible, prev):
    """Runs every part once (used by `init`)."""
    ctx = self.context_kv(features_BxSxF, positions_BxS)
    h = self.block_hidden(x_BxAxGxD, positions_BxAxG, ctx, visible)
    return self.head_step(h, prev, self.initial_head_state(prev.shape))


class TrainOutput(NamedTuple):
  """N is the draft vocabulary (V unless the drafter has a reduced one, `drafters.draft_vocab`)."""

  logits: jax.Array  # [B, A, G, N] float32: U_k + B_k under teacher forcing
  confidence_logits: jax.Array | None  # [B, A, G]
  base_logits: jax.Array  # [B, A, G, N] float32: U_k (backbone only)


def context_visible(slots_S: int, anchors_BxA: jax.Array, window: int | None) -> jax.Array:
  """[B, A, S] bool: context slot s (slot = position) is visible to the block anchored at a iff
  s < a, and with a context window also a - window < s (the block's own slots are always
  visible to each other)."""
  s = jnp.arange(slots_S)[None, None, :]
  a = anchors_BxA[..., None]
  visible = s < a
  if window is not None:
    visible &= s > a - window
  return visible


def anchor_candidates(loss_mask_BxT: jax.Array) -> jax.Array:
  """[B, T] bool: position i can anchor a block iff it and position i + 1 are in the loss mask."""
  m = loss_mask_BxT.astype(bool)
  return m & jnp.pad(m[:, 1:], ((0, 0), (0, 1)))


def supervised_slots(anchors_BxA: jax.Array, loss_mask_BxT: jax.Array, block_size: int):
  """[B, A, G] bool: slot k (label at anchor + k + 1) is supervised while every label up to it is
  inside the sequence and in the loss mask (a contiguous prefix)."""
  t = loss_mask_BxT.shape[1]
  label_pos = anchors_BxA[..., None] + 1 + jnp.arange(block_size)
  inside = label_pos < t
  labelled = jnp.take_along_axis(
    loss_mask_BxT.astype(bool)[:, None, :].repeat(anchors_BxA.shape[1], 1),
    jnp.clip(label_pos, 0, t - 1),
    axis=2,
  )
  return jnp.cumprod(inside & labelled, axis=-1).astype(bool)


@dataclasses.dataclass(frozen=True)
class DSparkDrafter(TrainedDrafter):
  """DSpark (or DFlash) as a drafter: hashable, its methods pure functions of their inputs.

  Params: {"trainable": BlockModel params, "frozen": `frozen_parts(target_params, target)`}.
  """

  # `propose` only reads the state (the context grows in `commit`), so a decode round may skip
  # drafting and commit the anchor alone (`decoding.scheduler.should_draft`).
  stateless_propose = True

  def __post_init__(self):
    if self.config.kind not in ("dspark", "dflash"):
      raise ValueError(f"DSparkDrafter runs dspark or dflash configs, not {self.config.kind!r}")
    self.config.check_target(self.target)

  @property
  def model(self) -> BlockModel:
    return BlockModel(self.config, self.target)

  def _apply(self, params, method, *args):
    return self.model.apply({"params": params["trainable"]}, *args, method=method)

  def _init_args(self):
    f = len(self.feature_layers) * self.target.hidden_size
    g, d = self.draft_len, self.target.hidden_size
    return (
      jnp.zeros((1, 2, f)),
      jnp.zeros((1, 2), jnp.int32),
      jnp.zeros((1, 1, g, d)),
      jnp.zeros((1, 1, g), jnp.int32),
      jnp.ones((1, 1, 2), bool),
      jnp.zeros((1, 1, g), jnp.int32),
    )

  # --- training mode ------------------------------------------------------------------------
  def train_forward(self, params, tokens_BxT, features_BxTxF, anchors_BxA) -> TrainOutput:
    """Every anchor block of each sequence at once, the head teacher-forced.

    Args:
      params: drafter params.
      tokens_BxT: the sequence (prompt and response) token ids.
      features_BxTxF: the target's features of every token (the chosen layers' outputs).
      anchors_BxA: anchor positions (0 <= a < T); slot k of a block predicts token a + k + 1.
    """

    def run(model):
      ctx = self.context(model, features_BxTxF)
      return self.blocks(model, params["frozen"], tokens_BxT, ctx, anchors_BxA)

    return self.bind(params, run)

  def bind(self, params, fn):
    """Runs fn(model) with the model bound to the trainable params (for training code)."""
    return nn.apply(fn, self.model)({"params": params["trainable"]})

  def context(self, model, features_BxTxF):
    """Context keys/values of whole sequences, computed once and shared by every block."""
    b, t, _ = features_BxTxF.shape
    positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    return model.context_kv(features_BxTxF, positions)

  def blocks(self, model, frozen, tokens_BxT, ctx, anchors_BxA) -> TrainOutput:
    """Teacher-forced outputs of the blocks at `anchors_BxA` (call inside `bind`)."""
    t = tokens_BxT.shape[1]
    g = self.draft_len
    slot_pos = anchors_BxA[..., None] + jnp.arange(g)  # [B, A, G]
    block_tokens = jnp.where(
      jnp.arange(g) == 0,
      jnp.take_along_axis(tokens_BxT, anchors_BxA, 1)[..., None],
      self.config.mask_token_id,
    )
    visible = context_visible(t, anchors_BxA, self.config.context_window)
    # Teacher forcing: x_{k-1} is the true token at a + k (x_0 = the anchor).
    prev = jnp.take_along_axis(
      tokens_BxT[:, None, :].repeat(anchors_BxA.shape[1], 1), jnp.clip(slot_pos, 0, t - 1), 2
    )
    h = model.block_hidden(embed(frozen, block_tokens, self.target), slot_pos, ctx, visible)
    base = draft_logits(frozen, h, self.target)

    def step(state, inputs):
      h_k, prev_k = inputs
      bias, conf, state = model.head_step(h_k, prev_k, state)
      return state, (bias, conf)

    slots_first = lambda x: jnp.moveaxis(x, 2, 0)
    _, (bias, conf) = jax.lax.scan(
      step, model.initial_head_state(prev.shape[:2]), (slots_first(h), slots_first(prev))
    )
    logits = base if bias is None else base + jnp.moveaxis(bias, 0, 2)
    conf = None if conf is None else jnp.moveaxis(conf, 0, 2)
    return TrainOutput(logits, conf, base)

  # --- the drafter protocol ----------------------------------------------------------------
  def init_state(self, params, prompt_features, prompt_tokens, prompt_lens, capacity: int):
    """The draft context cache holds the prompt's projected features (slot = position)."""
    del prompt_tokens
    b, p, _ = prompt_features.shape
    positions = jnp.broadcast_to(jnp.arange(p, dtype=jnp.int32), (b, p))
    cache = KVCache.create(self.config.backbone_config(self.target), b, capacity)
    return _write_context(self, params, cache, prompt_features, positions).with_lengths(prompt_lens)

  def propose(self, params, state, anchor_tokens, anchor_positions, sampling, seed, request_ids):
    """One parallel pass over [anchor, mask x (G-1)], then a scan drawing slot by slot."""
    args = (params, state, anchor_tokens, anchor_positions, sampling, seed, request_ids)
    return self.propose_prefix(*args, self.draft_len)

  def propose_prefix(
    self, params, state, anchor_tokens, anchor_positions, sampling, seed, request_ids, count: int
  ):
    """`propose`'s first `count` slots, computed alone: the block pass still covers all G
    positions (the slots attend to each other), but the LM head, the sequential head and the
    draws run for `count` slots only. Tokens, logits and confidences equal `propose`'s."""

    def choose(k, logits_BxV):
      return sample_draft(logits_BxV, sampling, seed, request_ids, anchor_positions + k + 1)

    proposal = self._draft(params, state, anchor_tokens, anchor_positions, choose, count)
    return proposal, state

  def propose_forced(self, params, state, anchor_tokens, anchor_positions, tokens_BxG):
    """The proposal's logits and confidences had the drafter drawn `tokens_BxG` (for tests,
    and for scoring a known continuation)."""
    return self._draft(
      params, state, anchor_tokens, anchor_positions, lambda k, _: tokens_BxG[:, k]
    )

  def _draft(self, params, state, anchor_tokens, anchor_positions, choose, count=None) -> Proposal:
    g = self.draft_len
    count = g if count is None else count
    b = anchor_tokens.shape[0]
    frozen = params["frozen"]
    block_tokens = jnp.full((b, 1, g), self.config.mask_token_id, jnp.int32)
    block_tokens = block_tokens.at[:, 0, 0].set(anchor_tokens)
    positions = (anchor_positions[:, None] + jnp.arange(g))[:, None, :]
    x = embed(frozen, block_tokens, self.target)
    h = self._block_hidden_over_context(params, x, positions, state)[:, 0, :count]  # [B, n, D]

    def run(model):
      base = draft_logits(frozen, h, self.target)  # [B, count, N]

      def step(carry, k):
        prev, head_state = carry
        bias, conf, head_state = model.head_step(h[:, k], prev, head_state)
        logits = base[:, k] if bias is None else base[:, k] + bias
        # Drawn in the target's vocabulary (-inf outside the draft vocabulary), so the logits
        # handed to verification are exactly those the token was sampled from.
        logits = to_target_vocab(frozen, logits, self.target.vocab_size)
        token = choose(k, logits).astype(jnp.int32)
        if conf is None:
          conf = jnp.zeros((b,))
        else:  # STS / Platt: z / T_k + b_k per slot (order-preserving within a slot)
          temps, offsets = self.config.confidence_temperatures, self.config.confidence_offsets
          conf = conf if not temps else conf / jnp.asarray(temps)[k]
          conf = jax.nn.sigmoid(conf if not offsets else conf + jnp.asarray(offsets)[k])
        return (token, head_state), (token, logits, conf)

      init = (anchor_tokens.astype(jnp.int32), model.initial_head_state((b,)))
      _, (tokens, logits, conf) = jax.lax.scan(step, init, jnp.arange(count))
      return tokens.T, logits.transpose(1, 0, 2), conf.T

    tokens, logits, conf = nn.apply(run, self.model)({"params": params["trainable"]})
    return Proposal(tokens, logits, conf if self.config.confidence_head else None)

  def _block_hidden_over_context(self, params, x_BxAxGxD, positions_BxAxG, state: KVCache):
    """`BlockModel.block_hidden` over the context cache, read only up to the smallest compiled
    prefix that holds every row's valid context (`prefix_buckets`, chosen with `lax.switch`):
    a proposal costs what the context needs, not what the cache's capacity holds."""
    buckets = prefix_buckets(state.capacity)

    def over_prefix(size):
      def run(trainable, x, positions, keys, values, lengths):
        ctx = tuple((k[:, :, :size], v[:, :, :size]) for k, v in zip(keys, values, strict=True))
        # The anchor sits at position `lengths` (the context holds every earlier token).
        visible = context_visible(size, lengths[:, None], self.config.context_window)
        variables = {"params": trainable}
        return self.model.apply(variables, x, positions, ctx, visible, method="block_hidden")

      return run

    index = prefix_bucket_index(buckets, jnp.max(state.lengths))
    args = (params["trainable"], x_BxAxGxD, positions_BxAxG, state.keys, state.values)
    return jax.lax.switch(index, [over_prefix(s) for s in buckets], *args, state.lengths)

  def commit(self, params, state, proposal, anchor_tokens, accepted_features, num_accepted):
    """Adds the anchor's and the accepted drafts' target features to the context."""
    del proposal, anchor_tokens
    start = state.lengths
    b, n, _ = accepted_features.shape
    positions = start[:, None] + jnp.arange(n, dtype=jnp.int32)
    cache = _write_context(self, params, state, accepted_features, positions)
    return cache.with_lengths(start + 1 + num_accepted)


def _write_context(drafter: DSparkDrafter, params, cache: KVCache, features_BxTxF, positions_BxT):
  """Writes the context keys/values of T new tokens at each row's `cache.lengths`."""
  kv = drafter._apply(params, BlockModel.context_kv, features_BxTxF, positions_BxT)
  start = cache.lengths
  keys = tuple(write_rows(c, k, start) for c, (k, _) in zip(cache.keys, kv, strict=True))
  values = tuple(write_rows(c, v, start) for c, (_, v) in zip(cache.values, kv, strict=True))
  return KVCache(keys, values, start)
