"""Exact output distributions by enumeration, and a chi-square test against samples."""

import jax
import numpy as np

from dspark_jax.decoding.loop import SpecConfig, speculative_generate
from dspark_jax.decoding.sampling import filter_logits
from dspark_jax.models.transformer import forward_jit


def exact_sequence_probs(config, params, prompt, n, sampling):
  """P(first n generated tokens) for every sequence, by enumerating all prefixes."""
  v = config.vocab_size
  probs = {(): 1.0}
  for _ in range(n):
    prefixes = list(probs)
    tokens = np.asarray([prompt + list(p) for p in prefixes])
    logits = forward_jit(
      params, tokens, np.arange(tokens.shape[1])[None].repeat(len(tokens), 0), config=config
    ).logits[:, -1]
    step = np.asarray(jax.nn.softmax(filter_logits(logits, sampling), axis=-1), np.float64)
    probs = {p + (x,): probs[p] * step[i, x] for i, p in enumerate(prefixes) for x in range(v)}
  return probs


def chi_square(samples, probs):
  """Chi-square statistic and degrees of freedom, pooling cells expected below 5."""
  counts = {}
  for s in samples:
    counts[s] = counts.get(s, 0) + 1
  n = len(samples)
  if any(probs.get(s, 0.0) == 0.0 for s in counts):
    return float("inf"), 1
  big = [s for s, p in probs.items() if p * n >= 5]
  small = [s for s, p in probs.items() if p * n < 5]
  stat = sum((counts.get(s, 0) - probs[s] * n) ** 2 / (probs[s] * n) for s in big)
  pooled = sum(probs[s] for s in small) * n
  if pooled > 0:
    stat += (sum(counts.get(s, 0) for s in small) - pooled) ** 2 / pooled
  return stat, len(big) + (pooled > 0) - 1


def chi2_quantile_1e3(dof):
  """Upper 0.001 quantile of chi-square (Wilson-Hilferty approximation, good for dof > 10)."""
  z = 3.0902
  return dof * (1 - 2 / (9 * dof) + z * np.sqrt(2 / (9 * dof))) ** 3


def tight_cache(prompts, new_tokens: int, drafter) -> int:
  """The fewest KV slots a speculative run needs (longest prompt + budget + one verification
  block). The default rounds up to 64 so that calls of different lengths share a compile; the
  20,000-row distribution tests pass this instead: their cost is mostly cache traffic, 2-3x
  less at 16 slots than at 64, and the last slot of the cache gets used."""
  return max(len(p) for p in prompts) + new_tokens + drafter.draft_len + 1


def sampled_requests(params, config, drafter, draft_params, prompt, sampling, n=20_000, **kwargs):
  """Speculative decoding of `n` requests of one prompt, 3 new tokens each, in one batch.

  Randomness is keyed per request, so each row is an independent sample of the output
  distribution. The KV cache is sized to what the rows need (`tight_cache`); `kwargs` go to
  `speculative_generate` (`verify_len`, ...)."""
  return speculative_generate(
    params,
    config,
    drafter,
    draft_params,
    [prompt] * n,
    SpecConfig(3, sampling),
    seed=4,
    cache_capacity=tight_cache([prompt], 3, drafter),
    **kwargs,
  )
