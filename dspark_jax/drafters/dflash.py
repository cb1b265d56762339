"""DFlash: DSpark's parallel backbone alone (no sequential head, no confidence head).

The baseline the paper measures DSpark against; its draft distribution at slot k is
softmax(U_k), so it equals DSpark whose head bias is zero.
"""

from __future__ import annotations

import dataclasses

from dspark_jax.config import DraftConfig
from dspark_jax.drafters.dspark import DSparkDrafter


def dflash_config(**overrides) -> DraftConfig:
  """A DFlash config (DeepSpec defaults unless overridden)."""
  return DraftConfig(**{"kind": "dflash", "head": "none", "confidence_head": False, **overrides})


@dataclasses.dataclass(frozen=True)
class DFlashDrafter(DSparkDrafter):
  def __post_init__(self):
    if self.config.kind != "dflash":
      raise ValueError(f"DFlashDrafter runs dflash configs, not {self.config.kind!r}")
    super().__post_init__()
