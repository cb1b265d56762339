"""RoPE scalings beyond a linear factor: YaRN (its frequencies and magnitude corrections).

Static data like the configs that hold it (`ModelConfig.rope_yarn`), so it lives below them.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np


@dataclasses.dataclass(frozen=True)
class YarnRope:
  """YaRN RoPE scaling (DeepSeek-V3 and long-context Qwen checkpoints; Peng et al. 2023).

  Per rotary frequency, between plain RoPE (fast dims, which turn more than `beta_fast` times
  over the original context) and positions divided by `factor` (slow dims, fewer than
  `beta_slow` turns), with a linear ramp in between; cos and sin are multiplied by
  `attention_factor`. DeepSeek's extra softmax scale (`mscale_all_dim`) is not part of the
  rotation: loaders put it in `MLAConfig.score_multiplier`.
  """

  factor: float
  original_context: int  # HF original_max_position_embeddings
  beta_fast: float = 32.0
  beta_slow: float = 1.0
  attention_factor: float = 1.0
  truncate: bool = True  # round the ramp's ends to whole dims (HF's default)

  def __post_init__(self):
    if self.factor < 1.0 or self.original_context < 1:
      raise ValueError(
        f"YaRN needs factor >= 1 and original_context >= 1, got {self.factor}, "
        f"{self.original_context}"
      )

  def inv_freq(self, head_dim: int, theta: float) -> np.ndarray:
    """float32 [head_dim / 2]: the blended inverse frequencies."""
    pos_freqs = np.float32(theta) ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim)
    extrapolated, interpolated = 1.0 / pos_freqs, 1.0 / (self.factor * pos_freqs)

    def dim_of(turns: float) -> float:  # the dim that turns `turns` times over the context
      return (
        head_dim * math.log(self.original_context / (turns * 2 * math.pi)) / (2 * math.log(theta))
      )

    low, high = dim_of(self.beta_fast), dim_of(self.beta_slow)
    if self.truncate:
      low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, head_dim - 1)
    if low == high:
      high += 0.001  # a step instead of a ramp
    ramp = np.clip((np.arange(head_dim // 2, dtype=np.float32) - low) / (high - low), 0, 1)
    keep = (1 - ramp).astype(np.float32)  # 1: extrapolate (plain RoPE), 0: interpolate
    return (interpolated * (1 - keep) + extrapolated * keep).astype(np.float32)


def yarn_mscale(factor: float, mscale: float = 1.0) -> float:
  """YaRN's magnitude correction 0.1 * mscale * ln(factor) + 1 (1 for factor <= 1)."""
  return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0


def deepseek_score_multiplier(factor: float, mscale_all_dim: float) -> float:
  """DeepSeek's rescale of every attention score under scaled RoPE, mscale(factor,
  mscale_all_dim)^2 (`MLAConfig.score_multiplier`); 1 without mscale_all_dim."""
  return yarn_mscale(factor, mscale_all_dim) ** 2 if mscale_all_dim else 1.0
