"""The drafter object of a DraftConfig."""

from __future__ import annotations

from dspark_jax.config import DraftConfig, ModelConfig
from dspark_jax.drafters.dflash import DFlashDrafter
from dspark_jax.drafters.dspark import DSparkDrafter
from dspark_jax.drafters.eagle3 import Eagle3Drafter

DRAFTER_CLASSES = {"dspark": DSparkDrafter, "dflash": DFlashDrafter, "eagle3": Eagle3Drafter}


def make_drafter(config: DraftConfig, target: ModelConfig):
  """DSparkDrafter, DFlashDrafter or Eagle3Drafter for `config` on `target` (validated)."""
  return DRAFTER_CLASSES[config.kind](config, target)
