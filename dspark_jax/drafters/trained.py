"""What every trained drafter (DSpark, DFlash, Eagle3) shares: config, target, parameters.

A trained drafter is a frozen, hashable dataclass of its `DraftConfig` and the target's
`ModelConfig`; its params are {"trainable": its Flax module's params, "frozen":
`frozen_parts(target_params, target)`}. Subclasses supply `model` (the Flax module) and
`_init_args` (dummy inputs that touch every parameter once, for shape inference).
"""

from __future__ import annotations

import dataclasses

import jax
from flax import linen as nn

from dspark_jax.config import DraftConfig, ModelConfig
from dspark_jax.drafters.draft_vocab import check_draft_ids, draft_frozen
from dspark_jax.models.layers import random_params


@dataclasses.dataclass(frozen=True)
class TrainedDrafter:
  config: DraftConfig
  target: ModelConfig

  @property
  def draft_len(self) -> int:
    return self.config.block_size

  @property
  def feature_layers(self) -> tuple[int, ...]:
    return self.config.target_layer_ids

  @property
  def vocab_size(self) -> int:
    return self.target.vocab_size

  @property
  def model(self) -> nn.Module:
    raise NotImplementedError

  def _init_args(self) -> tuple:
    raise NotImplementedError

  def _abstract(self):
    return jax.eval_shape(lambda: self.model.init(jax.random.key(0), *self._init_args()))["params"]

  def init_trainable(self, rng: jax.Array):
    """Random trainable params (normal(0.02) matrices, zero biases, unit norms)."""
    return random_params(self.trainable_shapes(), rng)

  def init_params(self, rng: jax.Array, target_params, draft_ids=None) -> dict:
    """Random trainable params; `draft_ids` [N] (ascending target ids) when the config has a
    reduced draft vocabulary of N tokens."""
    self.checked_draft_ids(draft_ids)
    return {
      "trainable": self.init_trainable(rng),
      "frozen": draft_frozen(target_params, self.target, draft_ids),
    }

  def checked_draft_ids(self, draft_ids):
    """`draft_ids` as checked int32 [N] (or None), matching the config's draft vocabulary size.

    Raises:
      ValueError: ids missing, of the wrong count, not ascending target ids, or given to a
        drafter without a reduced draft vocabulary.
    """
    n = self.config.draft_vocab_size
    if n and (draft_ids is None or len(draft_ids) != n):
      got = "none" if draft_ids is None else len(draft_ids)
      raise ValueError(f"this drafter's draft vocabulary needs {n} draft ids, got {got}")
    if not n and draft_ids is not None:
      raise ValueError("draft ids given for a drafter without a reduced draft vocabulary")
    return None if draft_ids is None else check_draft_ids(draft_ids, self.target.vocab_size)

  def trainable_shapes(self):
    return nn.unbox(self._abstract())

  def logical_axes(self):
    """PartitionSpecs of logical axis names for the trainable params."""
    return nn.get_partition_spec(self._abstract())
