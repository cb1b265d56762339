"""The target parts a drafter borrows: token embedding and LM head, frozen and never copied.

A drafter's params are `{"trainable": ..., "frozen": frozen_parts(target_params, ...)}`. The
frozen dict holds references to the target's own arrays (no copy is made, on host or device),
and training differentiates and updates only the "trainable" subtree.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dspark_jax.config import ModelConfig


def frozen_parts(target_params, target: ModelConfig) -> dict:
  """{"embedding": [V, D]} plus {"lm_head": [D, V]} when the target does not tie them."""
  parts = {"embedding": target_params["embedding"]}
  if not target.tie_embeddings:
    parts["lm_head"] = target_params["lm_head"]
  return parts


def embed(frozen: dict, tokens: jax.Array, target: ModelConfig) -> jax.Array:
  """Token embeddings [..., D] exactly as the target computes its input."""
  x = jnp.take(frozen["embedding"], tokens, axis=0).astype(target.dtype)
  if target.gemma_style:
    x = x * jnp.asarray(target.hidden_size**0.5, target.dtype)
  return x


def lm_logits(frozen: dict, hidden: jax.Array, target: ModelConfig) -> jax.Array:
  """float32 logits [..., V] of final-normed hidden states through the target's LM head."""
  if target.tie_embeddings:
    logits = jnp.einsum("...d,vd->...v", hidden, frozen["embedding"].astype(hidden.dtype))
  else:
    logits = hidden @ frozen["lm_head"].astype(hidden.dtype)
  return finish_logits(logits, target)


def finish_logits(logits: jax.Array, target: ModelConfig) -> jax.Array:
  """LM-head outputs as the target's float32 logits (its final soft-cap applied, if any)."""
  logits = logits.astype(jnp.float32)
  if target.final_logit_softcap is not None:
    cap = target.final_logit_softcap
    logits = jnp.tanh(logits / cap) * cap
  return logits


def final_norm_scale(target_params, target: ModelConfig) -> jax.Array:
  """The target's effective final-norm scale [D] (Gemma stores w and applies 1 + w)."""
  scale = jnp.asarray(target_params["final_norm"]["scale"], jnp.float32)
  return scale + 1.0 if target.gemma_style else scale
