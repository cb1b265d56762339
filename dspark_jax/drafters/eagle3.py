"""Eagle3: one autoregressive decoder layer over [token embedding ; feature], the baseline.

The layer's input at position i pairs the token x_i with a hidden vector: fc(f_{i-1}) (the
target's features of the previous token, projected) for committed tokens, or the drafter's own
output at i - 1 while drafting. Its q/k/v projections read both halves (2D inputs); the residual
stream starts from the hidden half. Drafting from the anchor a: step j sits at position a + j,
reads (x_{a+j}, out_{a+j-1}) (fc(f_{a-1}) for j = 0) and predicts x_{a+j+1}.

`train_forward` is the training-time test: step j at position i is the step-j draft of the round
anchored at i - j. Its attention sees the step-0 entries at positions <= i - j (what the cache
holds at inference) and the step-s entries at i - j + s for 1 <= s <= j (the round's own earlier
drafts), so it equals inference with the same tokens, exactly.

Letters: B batch, T tokens, J steps, S cache slots, D width, F feature width, V vocabulary.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax import struct

from dspark_jax.config import DraftConfig, ModelConfig
from dspark_jax.drafters.base import Proposal, sample_draft
from dspark_jax.drafters.draft_vocab import draft_logits, to_target_vocab
from dspark_jax.drafters.shared import embed
from dspark_jax.drafters.trained import TrainedDrafter
from dspark_jax.models.kv_cache import KVCache, write_rows
from dspark_jax.models.layers import (
  GatedMLP,
  RMSNorm,
  _param,
  apply_rope,
  attend,
  attend_cache_prefix,
  attention_mask,
  rope_cos_sin,
)


class Eagle3Layer(nn.Module):
  draft: DraftConfig
  target: ModelConfig

  def setup(self):
    c = self.draft.backbone_config(self.target)
    self.c = c
    m, d, h, n, k = (
      len(self.draft.target_layer_ids),
      c.hidden_size,
      c.num_heads,
      c.num_kv_heads,
      c.head_dim,
    )
    self.fc = _param(self, "fc", (m * d, d), (None, "embed"))
    self.input_norm = RMSNorm(c.rms_eps, 0.0, c.dtype)
    self.hidden_norm = RMSNorm(c.rms_eps, 0.0, c.dtype)
    self.q_proj = _param(self, "q_proj", (2 * d, h, k), ("embed", "heads", "head_dim"))
    self.k_proj = _param(self, "k_proj", (2 * d, n, k), ("embed", "kv_heads", "head_dim"))
    self.v_proj = _param(self, "v_proj", (2 * d, n, k), ("embed", "kv_heads", "head_dim"))
    self.o_proj = _param(self, "o_proj", (h, k, d), ("heads", "head_dim", "embed"))
    self.q_norm = RMSNorm(c.rms_eps, 0.0, c.dtype)
    self.k_norm = RMSNorm(c.rms_eps, 0.0, c.dtype)
    self.pre_mlp_norm = RMSNorm(c.rms_eps, 0.0, c.dtype)
    self.mlp = GatedMLP(c.intermediate_size, "silu", c.dtype)
    self.final_norm = RMSNorm(c.rms_eps, 0.0, c.dtype)

  def project(self, features_BxTxF):
    dt = self.c.dtype
    return features_BxTxF.astype(dt) @ self.fc.astype(dt)

  def qkv(self, emb_BxTxD, hidden_BxTxD, positions_BxT):
    """Queries [B, T, H, K] and keys/values [B, N, T, K] of the (token, hidden) pairs."""
    c, dt = self.c, self.c.dtype
    x = jnp.concatenate([self.input_norm(emb_BxTxD), self.hidden_norm(hidden_BxTxD)], -1)
    q = self.q_norm(jnp.einsum("btd,dhk->bthk", x, self.q_proj.astype(dt)))
    k = self.k_norm(jnp.einsum("btd,dnk->btnk", x, self.k_proj.astype(dt)))
    v = jnp.einsum("btd,dnk->btnk", x, self.v_proj.astype(dt))
    cos, sin = rope_cos_sin(positions_BxT, c.head_dim, c.rope_theta, c.rope_scaling)
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    return q, k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)

  def finish(self, attn_BxTxHxK, hidden_BxTxD):
    """(output hidden [B, T, D] fed to the next step, final-normed hidden for the LM head)."""
    dt = self.c.dtype
    x = hidden_BxTxD + jnp.einsum("bthk,hkd->btd", attn_BxTxHxK, self.o_proj.astype(dt))
    x = x + self.mlp(self.pre_mlp_norm(x))
    return x, self.final_norm(x)

  def __call__(self, features_BxTxF, emb_BxTxD, positions_BxT):
    """Runs every part once (used by `init`)."""
    hidden = self.project(features_BxTxF)
    q, k, v = self.qkv(emb_BxTxD, hidden, positions_BxT)
    mask = attention_mask(jnp.zeros(q.shape[0], jnp.int32), q.shape[1], k.shape[2], None)
    return self.finish(attend(q, k, v, mask, self.c.scale, None), hidden)


@struct.dataclass
class Eagle3State:
  cache: KVCache  # one layer; slot p holds the entry of (x_p, fc(f_{p-1}))
  last_hidden: jax.Array  # [B, D] fc(f_{a-1}): the anchor's hidden input


def ttt_attend(q_BxTxHxK, keys, values, scale: float):
  """Step j = len(keys) - 1 of the training-time test's attention, without a [T, T * (j + 1)]
  mask: the step-0 keys/values [B, N, T, K] are seen at positions <= i - j (a causal block), and
  each step-s entry (1 <= s <= j) only at i - j + s, one key per query: a diagonal, computed as
  an elementwise product after shifting step s's keys by j - s. Equals `attend` with the full
  mask at O(T^2 + j T) instead of O(j T^2)."""
  b, t, h, k = q_BxTxHxK.shape
  n = keys[0].shape[1]
  j = len(keys) - 1
  q = q_BxTxHxK.reshape(b, t, n, h // n, k).transpose(0, 2, 3, 1, 4)  # [B, N, G, T, K]
  i = jnp.arange(t)
  causal = i[None, :] <= i[:, None] - j  # [T, T]
  scores = jnp.einsum("bngtk,bnsk->bngts", q, keys[0], preferred_element_type=jnp.float32)
  scores = [jnp.where(causal, scores, -jnp.inf)]
  shifted_v = []
  for s_ in range(1, j + 1):
    shift = j - s_  # query i reads step s_'s entry at i - shift
    k_s = jnp.pad(keys[s_], ((0, 0), (0, 0), (shift, 0), (0, 0)))[:, :, :t]
    shifted_v.append(jnp.pad(values[s_], ((0, 0), (0, 0), (shift, 0), (0, 0)))[:, :, :t])
    diag = jnp.einsum("bngtk,bntk->bngt", q, k_s, preferred_element_type=jnp.float32)
    scores.append(jnp.where(i >= shift, diag, -jnp.inf)[..., None])
  probs = jax.nn.softmax(jnp.concatenate(scores, -1) * scale, axis=-1).astype(values[0].dtype)
  out = jnp.einsum("bngts,bnsk->bngtk", probs[..., :t], values[0])
  for s_, v_s in enumerate(shifted_v):
    out = out + probs[..., t + s_, None] * v_s[:, :, None]
  return out.transpose(0, 3, 1, 2, 4).reshape(b, t, h, k)


def round_attend(q_BxAxHxK, keys0, values0, anchors_BxA, own_keys, own_values, scale: float):
  """Step j = len(own_keys) of the rounds anchored at `anchors` (queries [B, A, H, K]): each sees
  the step-0 keys/values [B, N, T, K] at positions <= its anchor and its own round's entries of
  steps 1..j ([B, N, A, K] each), as `ttt_attend` does at the rounds' positions."""
  b, a, h, k = q_BxAxHxK.shape
  n, t = keys0.shape[1], keys0.shape[2]
  q = q_BxAxHxK.reshape(b, a, n, h // n, k).transpose(0, 2, 3, 1, 4)  # [B, N, G, A, K]
  seen = jnp.arange(t)[None, None, :] <= anchors_BxA[:, :, None]  # [B, A, T]
  scores = jnp.einsum("bngak,bntk->bngat", q, keys0, preferred_element_type=jnp.float32)
  scores = [jnp.where(seen[:, None, None], scores, -jnp.inf)]
  for k_s in own_keys:
    scores.append(
      jnp.einsum("bngak,bnak->bnga", q, k_s, preferred_element_type=jnp.float32)[..., None]
    )
  probs = jax.nn.softmax(jnp.concatenate(scores, -1) * scale, axis=-1).astype(values0.dtype)
  out = jnp.einsum("bngat,bntk->bngak", probs[..., :t], values0)
  for s_, v_s in enumerate(own_values):
    out = out + probs[..., t + s_, None] * v_s[:, :, None]
  return out.transpose(0, 3, 1, 2, 4).reshape(b, a, h, k)


def _shift_right(x_BxTxD):
  """Position i gets x[i - 1]; position 0 gets zeros (no token precedes it)."""
  return jnp.pad(x_BxTxD, ((0, 0), (1, 0), (0, 0)))[:, :-1]


@dataclasses.dataclass(frozen=True)
class Eagle3Drafter(TrainedDrafter):
  """Params: {"trainable": Eagle3Layer params, "frozen": `frozen_parts(target_params, target)`}."""

  def __post_init__(self):
    if self.config.kind != "eagle3":
      raise ValueError(f"Eagle3Drafter runs eagle3 configs, not {self.config.kind!r}")
    if self.config.num_layers != 1:
      raise ValueError(f"Eagle3 has exactly one layer, got num_layers={self.config.num_layers}")
    self.config.check_target(self.target)

  @property
  def model(self) -> Eagle3Layer:
    return Eagle3Layer(self.config, self.target)

  def _init_args(self):
    f = len(self.feature_layers) * self.target.hidden_size
    d = self.target.hidden_size
    return jnp.zeros((1, 2, f)), jnp.zeros((1, 2, d)), jnp.zeros((1, 2), jnp.int32)

  # --- one pass over new tokens with the cache ------------------------------------------------
  def _run(self, params, tokens_BxT, hidden_in_BxTxD, start_B, cache: KVCache):
    """Writes T entries at slots start.. and returns (output hidden, logits [B, T, V], cache)."""
    frozen, t = params["frozen"], tokens_BxT.shape[1]
    positions = start_B[:, None] + jnp.arange(t, dtype=jnp.int32)

    def run(model):
      q, k, v = model.qkv(embed(frozen, tokens_BxT, self.target), hidden_in_BxTxD, positions)
      keys = write_rows(cache.keys[0], k, start_B)
      values = write_rows(cache.values[0], v, start_B)
      attn = attend_cache_prefix(q, keys, values, start_B, None, model.c.scale, None)
      out, normed = model.finish(attn, hidden_in_BxTxD)
      logits = to_target_vocab(
        frozen, draft_logits(frozen, normed, self.target), self.target.vocab_size
      )
      return out, logits, cache.replace(keys=(keys,), values=(values,))

    return nn.apply(run, self.model)({"params": params["trainable"]})

  def _project(self, params, features):
    return self.model.apply({"params": params["trainable"]}, features, method=Eagle3Layer.project)

  # --- training mode ------------------------------------------------------------------------
  def train_forward(self, params, tokens_BxT, features_BxTxF, num_steps: int, reduce=None):
    """Training-time test: logits [J, B, T, N] (N the draft vocabulary); step j at position i
    predicts x_{i+1} in the round anchored at i - j (teacher-forced tokens).

    With `reduce(j, normed_BxTxD) -> pytree` (step j's final-normed hidden states, which the
    frozen LM head turns into logits), returns the sum over steps of its results instead; each
    reduce is recomputed in the backward pass (`jax.checkpoint`), so whatever logits it makes
    are alive one step at a time.
    """
    b, t = tokens_BxT.shape
    frozen = params["frozen"]
    positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))

    def run(model):
      emb = embed(frozen, tokens_BxT, self.target)
      hidden = _shift_right(model.project(features_BxTxF))
      keys, values, results = [], [], []
      for j in range(num_steps):
        q, k, v = model.qkv(emb, hidden, positions)
        keys.append(k)
        values.append(v)
        attn = ttt_attend(q, keys, values, model.c.scale)
        out, normed = model.finish(attn, hidden)
        if reduce is None:
          results.append(draft_logits(frozen, normed, self.target))
        else:
          results.append(jax.checkpoint(lambda normed, j=j: reduce(j, normed))(normed))
        hidden = _shift_right(out)
      if reduce is None:
        return jnp.stack(results)
      return jax.tree.map(lambda *xs: sum(xs), *results)

    return nn.apply(run, self.model)({"params": params["trainable"]})

  def train_rounds(
    self, params, tokens_BxT, features_BxTxF, anchors_BxA, num_steps: int, reduce, remat=True
  ):
    """The training-time test of the rounds anchored at `anchors` only: the sum over steps j of
    `reduce(j, normed_BxAxD)`, step j's final-normed hidden states at positions anchors + j (the
    LM head turns them into predictions of x_{a+j+1}). Equals `train_forward` gathered there.

    Step 0 runs over every position (its entries are the cache the rounds read); steps >= 1 run
    on [B, A] positions instead of [B, T], which is most of the test's cost when A << T. Rounds
    running past the end are clipped to position T - 1: mask them in `reduce`. Each `reduce` is
    recomputed in the backward pass (`jax.checkpoint`) unless remat=False.
    """
    b, t = tokens_BxT.shape
    frozen = params["frozen"]
    rows = jnp.arange(b)[:, None]
    positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))

    def run(model):
      emb = embed(frozen, tokens_BxT, self.target)
      hidden = _shift_right(model.project(features_BxTxF))
      q, keys0, values0 = model.qkv(emb, hidden, positions)
      out, normed = model.finish(ttt_attend(q, [keys0], [values0], model.c.scale), hidden)
      hidden, normed = out[rows, anchors_BxA], normed[rows, anchors_BxA]  # [B, A, D]
      own_keys, own_values, results = [], [], []
      for j in range(num_steps):
        if j:
          pos = jnp.minimum(anchors_BxA + j, t - 1)
          q, k, v = model.qkv(emb[rows, pos], hidden, pos)
          own_keys.append(k)
          own_values.append(v)
          attn = round_attend(q, keys0, values0, anchors_BxA, own_keys, own_values, model.c.scale)
          hidden, normed = model.finish(attn, hidden)
        step = lambda normed, j=j: reduce(j, normed)
        results.append((jax.checkpoint(step) if remat else step)(normed))
      return jax.tree.map(lambda *xs: sum(xs), *results)

    return nn.apply(run, self.model)({"params": params["trainable"]})

  # --- the drafter protocol ----------------------------------------------------------------
  def init_state(self, params, prompt_features, prompt_tokens, prompt_lens, capacity: int):
    b = prompt_tokens.shape[0]
    cache = KVCache.create(self.config.backbone_config(self.target), b, capacity)
    projected = self._project(params, prompt_features)
    _, _, cache = self._run(
      params, prompt_tokens, _shift_right(projected), jnp.zeros((b,), jnp.int32), cache
    )
    last = jnp.take_along_axis(projected, (prompt_lens - 1)[:, None, None], axis=1)[:, 0]
    return Eagle3State(cache.with_lengths(prompt_lens), last)

  def propose(self, params, state, anchor_tokens, anchor_positions, sampling, seed, request_ids):
    def choose(k, logits_BxV):
      return sample_draft(logits_BxV, sampling, seed, request_ids, anchor_positions + k + 1)

    proposal, cache = self._draft(params, state, anchor_tokens, anchor_positions, choose)
    return proposal, state.replace(cache=cache)

  def propose_forced(self, params, state, anchor_tokens, anchor_positions, tokens_BxG):
    return self._draft(
      params, state, anchor_tokens, anchor_positions, lambda k, _: tokens_BxG[:, k]
    )[0]

  def _draft(self, params, state, anchor_tokens, anchor_positions, choose):
    """G one-token steps from the anchor; the cache gains G provisional entries."""

    def step(carry, k):
      cache, token, hidden = carry
      out, logits, cache = self._run(
        params, token[:, None], hidden[:, None], anchor_positions + k, cache
      )
      new = choose(k, logits[:, 0]).astype(jnp.int32)
      return (cache, new, out[:, 0]), (new, logits[:, 0])

    init = (state.cache, anchor_tokens.astype(jnp.int32), state.last_hidden)
    (cache, _, _), (tokens, logits) = jax.lax.scan(step, init, jnp.arange(self.draft_len))
    return Proposal(tokens.T, logits.transpose(1, 0, 2)), cache

  def commit(self, params, state, proposal, anchor_tokens, accepted_features, num_accepted):
    """Rewrites the entries of the accepted drafts from the target's features."""
    del anchor_tokens
    g = self.draft_len
    start = state.cache.lengths  # the anchor's slot
    projected = self._project(params, accepted_features)  # [B, G+1, D]: f_a .. f_{a+G}
    _, _, cache = self._run(params, proposal.tokens, projected[:, :g], start + 1, state.cache)
    last = jnp.take_along_axis(projected, num_accepted[:, None, None], axis=1)[:, 0]
    return Eagle3State(cache.with_lengths(start + 1 + num_accepted), last)
