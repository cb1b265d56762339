"""A reduced draft vocabulary: the drafter's logits over N chosen target tokens.

Nearly all of a proposal's cost on a small target is the LM head: G slots x V rows of the
target's own head (49,152 for SmolLM2), plus the sequential head's [R, V] output table. With a
draft vocabulary of the N tokens the drafter will ever propose, both shrink to N columns; the
rows are the target's frozen LM head (a sliced copy made once, [D, N]), never retrained.

Losslessness does not depend on N: `to_target_vocab` puts the draft's logits back into the
target's vocabulary with -inf outside the N tokens, so the proposal's distribution q is exact
(zero outside) and verification, which scores every target token, corrects for it. A smaller N
only costs acceptance on the tokens it leaves out (`coverage`).

Representation (the idea of Eagle3's `d2t`/`t2d` maps): `draft_ids` [N] int32, the target ids
in ascending order. Ascending order keeps greedy drafting identical under ties: argmax in the
draft space picks the lowest target id among equal logits, as argmax over the full vocabulary
does. `io.deepspec` stores the map as EAGLE's offsets `d2t` (target id = i + d2t[i]) and mask
`t2d`.

Letters: V target vocabulary, N draft vocabulary, D width.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dspark_jax.config import ModelConfig
from dspark_jax.drafters.shared import finish_logits, frozen_parts, lm_logits


def check_draft_ids(ids, vocab_size: int) -> np.ndarray:
  """`ids` as int32 [N], checked: strictly ascending target ids in [0, V). ValueError if not."""
  ids = np.asarray(ids)
  if ids.ndim != 1 or ids.size == 0 or not np.issubdtype(ids.dtype, np.integer):
    raise ValueError(f"draft ids must be a non-empty 1-D integer array, got shape {ids.shape}")
  if ids[0] < 0 or ids[-1] >= vocab_size or np.any(np.diff(ids) <= 0):
    raise ValueError(
      f"draft ids must be strictly ascending target ids in [0, {vocab_size}) "
      f"(got {ids.size} ids from {ids.min()} to {ids.max()})"
    )
  return ids.astype(np.int32)


def most_frequent_ids(
  sequences: Iterable[Sequence[int]], n: int, vocab_size: int, always: Iterable[int] = ()
) -> np.ndarray:
  """The `n` most frequent target ids in `sequences` (ascending), `always` included first.

  `always` holds tokens a drafter must be able to propose however rare they are in the data
  (the stop tokens: without them no proposal could ever end an answer). Ties in frequency go
  to the lower id; when the data has fewer than n distinct tokens the rest is filled with the
  lowest unseen ids, so the result always has exactly n ids.
  """
  if not 1 <= n <= vocab_size:
    raise ValueError(f"draft vocabulary size must be in [1, {vocab_size}], got {n}")
  counts = collections.Counter()
  for seq in sequences:
    counts.update(int(t) for t in seq)
  chosen = dict.fromkeys(int(t) for t in always if 0 <= int(t) < vocab_size)
  for token, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
    if len(chosen) >= n:
      break
    if 0 <= token < vocab_size:
      chosen.setdefault(token)
  for token in range(vocab_size):
    if len(chosen) >= n:
      break
    chosen.setdefault(token)
  return np.sort(np.fromiter(list(chosen)[:n], np.int64)).astype(np.int32)


def coverage(ids, sequences: Iterable[Sequence[int]]) -> float:
  """Share of the tokens in `sequences` that lie inside the draft vocabulary `ids`."""
  inside = set(int(i) for i in np.asarray(ids))
  total = hit = 0
  for seq in sequences:
    total += len(seq)
    hit += sum(int(t) in inside for t in seq)
  return hit / max(total, 1)


def draft_frozen(target_params, target: ModelConfig, draft_ids=None) -> dict:
  """`frozen_parts` plus, with `draft_ids`, {"draft_ids": [N] int32, "draft_head": [D, N]}: the
  target LM head's columns of those tokens (a copy of N x D values, made once)."""
  parts = frozen_parts(target_params, target)
  if draft_ids is None:
    return parts
  ids = jnp.asarray(check_draft_ids(draft_ids, target.vocab_size))
  if target.tie_embeddings:
    head = jnp.take(parts["embedding"], ids, axis=0).T
  else:
    head = jnp.take(parts["lm_head"], ids, axis=1)
  return parts | {"draft_ids": ids, "draft_head": head}


def draft_logits(frozen: dict, hidden: jax.Array, target: ModelConfig) -> jax.Array:
  """float32 logits [..., N] of final-normed hidden states over the draft vocabulary ([..., V]
  when the drafter has none)."""
  if "draft_head" not in frozen:
    return lm_logits(frozen, hidden, target)
  return finish_logits(hidden @ frozen["draft_head"].astype(hidden.dtype), target)


def to_draft_index(frozen: dict, tokens: jax.Array) -> jax.Array:
  """Target ids [...] as indices into the draft vocabulary, -1 for a token outside it (the
  ids themselves when the drafter has none)."""
  if "draft_ids" not in frozen:
    return tokens
  ids = frozen["draft_ids"]
  i = jnp.clip(jnp.searchsorted(ids, tokens), 0, ids.shape[0] - 1)
  return jnp.where(ids[i] == tokens, i, -1).astype(jnp.int32)


def to_target_vocab(frozen: dict, logits_N: jax.Array, vocab_size: int) -> jax.Array:
  """Draft-space logits [..., N] as target-space logits [..., V]: -inf outside the draft
  vocabulary, so the softmax of the result is exactly the draft distribution (zero outside)."""
  if "draft_ids" not in frozen:
    return logits_N
  full = jnp.full((*logits_N.shape[:-1], vocab_size), -jnp.inf, logits_N.dtype)
  return full.at[..., frozen["draft_ids"]].set(logits_N)


def restrict(drafter, params, draft_ids):
  """(drafter, params) of a trained full-vocabulary drafter cut to `draft_ids`.

  No retraining: the backbone is unchanged, the LM head is the target's columns of those
  tokens, and the sequential head's output table keeps its columns of them. Its draft
  distribution is the full drafter's, renormalised over the N tokens.
  """
  if drafter.config.draft_vocab_size:
    raise ValueError("this drafter already has a reduced draft vocabulary")
  target = drafter.target
  ids = check_draft_ids(draft_ids, target.vocab_size)
  config = dataclasses.replace(drafter.config, draft_vocab_size=int(ids.size))
  new = type(drafter)(config, target)
  trainable = slice_trainable(params["trainable"], ids)
  # The frozen parts hold the target's embedding (and LM head) under the target's own names.
  return new, {"trainable": trainable, "frozen": draft_frozen(params["frozen"], target, ids)}


def slice_trainable(trainable, ids: np.ndarray):
  """The trainable params with every vocabulary-sized output table cut to columns `ids` (only
  the sequential head's W2 [R, V] has one)."""

  def cut(path, x):
    names = [getattr(k, "key", str(k)) for k in path]
    return jnp.take(jnp.asarray(x), jnp.asarray(ids), axis=-1) if names[-1] == "markov_w2" else x

  return jax.tree_util.tree_map_with_path(cut, trainable)
