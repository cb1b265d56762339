"""Tiny random DSpark/DFlash/Eagle3 drafters for a tiny random target."""

import jax
import numpy as np

from dspark_jax.config import DraftConfig
from dspark_jax.drafters.build import make_drafter as build

HEADS = ("markov", "gated", "rnn")
KINDS = ("dspark-markov", "dspark-gated", "dspark-rnn", "dflash", "eagle3")


def tiny_draft_config(kind: str, **overrides) -> DraftConfig:
  """`kind` is one of KINDS; the target is expected to have at least 3 layers."""
  base = dict(block_size=4, num_layers=2, target_layer_ids=(-1, 1), markov_rank=8)
  if kind.startswith("dspark"):
    base.update(kind="dspark", head=kind.split("-")[1])
  else:
    base.update(kind=kind, head="none", confidence_head=False)
    if kind == "eagle3":
      base.update(num_layers=1)
  base.update(overrides)
  return DraftConfig(**base)


def make_drafter(kind: str, target_config, **overrides):
  return build(tiny_draft_config(kind, **overrides), target_config)


def randomize(tree, seed: int, scale: float = 0.3):
  """Adds N(0, scale^2) noise to every leaf, so norms, biases and heads are all non-trivial."""
  leaves, treedef = jax.tree.flatten(tree)
  rng = np.random.default_rng(seed)
  noisy = [x + scale * rng.standard_normal(x.shape).astype(np.float32) for x in leaves]
  return jax.tree.unflatten(treedef, noisy)


def random_drafter(kind: str, target_config, target_params, seed: int = 0, **overrides):
  """(drafter, params) with every trainable leaf randomised."""
  drafter = make_drafter(kind, target_config, **overrides)
  params = drafter.init_params(jax.random.key(seed), target_params)
  params["trainable"] = randomize(params["trainable"], seed)
  return drafter, params


def propose_args(drafter, dparams, config, params, sampling, seed: int = 5):
  """Arguments of `drafter.propose` for 2 random rows of 12 and 9 context tokens (the
  drafter's state built from the target's real features of those tokens)."""
  import jax.numpy as jnp

  from dspark_jax.models.transformer import forward

  tokens = jax.random.randint(jax.random.key(1), (2, 12), 0, config.vocab_size)
  positions = jnp.arange(12)[None].repeat(2, 0)
  feats = forward(params, tokens, positions, config=config, feature_layers=drafter.feature_layers)
  lens = jnp.array([12, 9])
  state = drafter.init_state(dparams, feats.features, tokens, lens, 40)
  return (dparams, state, tokens[:, 8], lens - 1, sampling, jnp.uint32(seed), jnp.arange(2))
