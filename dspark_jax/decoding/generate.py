"""Plain autoregressive generation: a batched, jitted `lax.while_loop` over the target.

The whole decode runs on device; the host only splits it into chunks of steps when it wants to
draw a progress bar (each chunk is the same compiled loop with a different step budget, so
chunking changes neither the output nor the compiled code).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from dspark_jax.config import ModelConfig
from dspark_jax.decoding.budget import check_context, check_memory
from dspark_jax.decoding.sampling import SamplingParams, sample, token_keys
from dspark_jax.models.kv_cache import KVCache
from dspark_jax.models.transformer import forward


@dataclasses.dataclass(frozen=True)
class GenerateConfig:
  """Static settings of a generation run (hashable: a jit static argument)."""

  max_new_tokens: int
  sampling: SamplingParams = SamplingParams()
  stop_ids: tuple[int, ...] = ()
  pad_id: int = 0

  def __post_init__(self):
    if self.max_new_tokens < 1:
      raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")


@struct.dataclass
class DecodeState:
  tokens: jax.Array  # [B, N] int32 generated tokens (N = max_new_tokens), pad after the end
  num_generated: jax.Array  # [B] int32
  last_token: jax.Array  # [B] int32, the newest token, not yet in the cache
  cache: KVCache  # holds prompt + generated tokens except the newest
  done: jax.Array  # [B] bool
  request_ids: jax.Array  # [B] int32, keys the randomness
  seed: jax.Array  # [] uint32
  steps: jax.Array  # [] int32, decode steps run (for statistics)


def _finished(state_tokens_new, num_generated, lengths, capacity, cfg: GenerateConfig):
  stop = jnp.isin(state_tokens_new, jnp.asarray(cfg.stop_ids, jnp.int32)) if cfg.stop_ids else False
  # The newest token is fed at slot `lengths`; a row whose cache is full cannot continue.
  return stop | (num_generated >= cfg.max_new_tokens) | (lengths >= capacity)


def prefill_first_token(
  params,
  prompts_BxP,
  prompt_lens_B,
  cache,
  request_ids_B,
  seed,
  model_config: ModelConfig,
  sampling: SamplingParams,
  feature_layers: tuple[int, ...] = (),
):
  """Target forward over right-padded prompts; returns (output with the cache at the prompt
  lengths, each row's first generated token drawn with key (seed, request, prompt length))."""
  batch, width = prompts_BxP.shape
  positions = jnp.broadcast_to(jnp.arange(width, dtype=jnp.int32), (batch, width))
  out = forward(
    params, prompts_BxP, positions, cache, config=model_config, feature_layers=feature_layers
  )
  # Padding beyond a row's prompt was written to the cache but lies past its length: invisible.
  out = out._replace(cache=out.cache.with_lengths(prompt_lens_B))
  last_logits = jnp.take_along_axis(out.logits, (prompt_lens_B - 1)[:, None, None], axis=1)[:, 0]
  first = sample(last_logits, sampling, token_keys(seed, request_ids_B, prompt_lens_B))
  return out, first


def prefill(
  params,
  prompts_BxP: jax.Array,
  prompt_lens_B: jax.Array,
  cache: KVCache,
  request_ids_B: jax.Array,
  seed: jax.Array,
  *,
  model_config: ModelConfig,
  gen_config: GenerateConfig,
) -> DecodeState:
  """Runs the right-padded prompts through the target and samples each row's first token."""
  batch = prompts_BxP.shape[0]
  out, first = prefill_first_token(
    params,
    prompts_BxP,
    prompt_lens_B,
    cache,
    request_ids_B,
    seed,
    model_config,
    gen_config.sampling,
  )
  cache = out.cache
  tokens = jnp.full((batch, gen_config.max_new_tokens), gen_config.pad_id, jnp.int32)
  tokens = tokens.at[:, 0].set(first)
  num_generated = jnp.ones((batch,), jnp.int32)
  done = _finished(first, num_generated, cache.lengths, cache.capacity, gen_config)
  return DecodeState(tokens, num_generated, first, cache, done, request_ids_B, seed, jnp.int32(0))


def decode(
  params,
  state: DecodeState,
  max_steps: jax.Array,
  *,
  model_config: ModelConfig,
  gen_config: GenerateConfig,
) -> DecodeState:
  """Up to `max_steps` decode steps; stops early when every row is done."""

  def cond(carry):
    step, s = carry
    return (step < max_steps) & ~jnp.all(s.done)

  def body(carry):
    step, s = carry
    lengths = s.cache.lengths
    out = forward(params, s.last_token[:, None], lengths[:, None], s.cache, config=model_config)
    # The fed token sits at position `lengths`; the new one will sit at `lengths + 1`.
    keys = token_keys(s.seed, s.request_ids, lengths + 1)
    new = sample(out.logits[:, 0], gen_config.sampling, keys)
    active = ~s.done
    new = jnp.where(active, new, gen_config.pad_id)
    cache = out.cache.with_lengths(jnp.where(active, lengths + 1, lengths))
    rows = jnp.arange(new.shape[0])
    column = jnp.minimum(s.num_generated, gen_config.max_new_tokens - 1)
    tokens = s.tokens.at[rows, column].set(jnp.where(active, new, s.tokens[rows, column]))
    num_generated = s.num_generated + active.astype(jnp.int32)
    done = s.done | _finished(new, num_generated, cache.lengths, cache.capacity, gen_config)
    s = s.replace(
      tokens=tokens,
      num_generated=num_generated,
      last_token=jnp.where(active, new, s.last_token),
      cache=cache,
      done=done,
      steps=s.steps + 1,
    )
    return step + 1, s

  _, state = jax.lax.while_loop(cond, body, (jnp.int32(0), state))
  return state


_prefill_jit = jax.jit(prefill, static_argnames=("model_config", "gen_config"))
_decode_jit = jax.jit(
  decode, static_argnames=("model_config", "gen_config"), donate_argnames=("state",)
)


_COMPILED: dict = {}


def _signature(tree):
  return tuple(
    (tuple(x.shape), str(x.dtype), str(getattr(x, "sharding", None))) for x in jax.tree.leaves(tree)
  )


def clear_compiled() -> None:
  """Drops every executable compiled so far (plain and speculative loops, and JAX's own
  caches). A long benchmark that compiles many loops calls it between settings so one
  process's JIT memory stays bounded."""
  _COMPILED.clear()
  jax.clear_caches()


def _compile(fn, *args, **static):
  """AOT-compiles `fn` for these arguments once per process; returns (executable, seconds).

  Compiling ahead of the call lets `generate` report compile time apart from run time.
  """
  key = (fn, _signature(args), tuple(sorted(static.items())))
  if key in _COMPILED:
    return _COMPILED[key], 0.0
  start = time.perf_counter()
  _COMPILED[key] = fn.lower(*args, **static).compile()
  return _COMPILED[key], time.perf_counter() - start


def pad_prompts(prompts: Sequence[Sequence[int]], width: int, pad_id: int) -> np.ndarray:
  """Right-padded [B, width] int32 host array of the prompts."""
  padded = np.full((len(prompts), width), pad_id, np.int32)
  for row, prompt in enumerate(prompts):
    padded[row, : len(prompt)] = prompt
  return padded


def round_up(n: int, multiple: int) -> int:
  return int(math.ceil(n / multiple) * multiple)


@dataclasses.dataclass
class GenerateResult:
  tokens: list[list[int]]  # per request, generated ids (stop token included if hit)
  prefill_seconds: float
  decode_seconds: float
  decode_steps: int
  compile_seconds: float = 0.0

  @property
  def num_tokens(self) -> int:
    return sum(len(t) for t in self.tokens)

  @property
  def tokens_per_second(self) -> float:
    """All generated tokens over prefill + decode wall time (compilation excluded)."""
    return self.num_tokens / max(self.prefill_seconds + self.decode_seconds, 1e-9)

  @property
  def decode_tokens_per_second(self) -> float:
    """Tokens from decode steps (all but each row's first) over decode wall time."""
    return (self.num_tokens - len(self.tokens)) / max(self.decode_seconds, 1e-9)


def generate(
  params,
  model_config: ModelConfig,
  prompts: Sequence[Sequence[int]],
  gen_config: GenerateConfig,
  *,
  seed: int = 0,
  request_ids: Sequence[int] | None = None,
  cache_capacity: int | None = None,
  prompt_width: int | None = None,
  steps_per_call: int | None = None,
  progress: Any = None,
) -> GenerateResult:
  """Generates continuations of a batch of token prompts of different lengths.

  Args:
    params: target parameters.
    model_config: target config.
    prompts: B lists of token ids (each non-empty).
    gen_config: max new tokens, sampling, stop ids.
    seed: randomness seed; with `request_ids` it fixes every draw.
    request_ids: per-prompt ids for the randomness (default 0..B-1).
    cache_capacity: KV slots per row (default: longest prompt + max_new_tokens, rounded up to
      a multiple of 64 so nearby sizes share one compiled program).
    prompt_width: padded prompt length (default: longest prompt rounded up to 16); a fixed
      width lets batches of different prompt lengths share one compiled program.
    steps_per_call: decode steps per device call (default: all in one call); smaller values let
      `progress` (a tqdm-like object with `update(n)`, counting tokens) advance while decoding.

  Raises:
    ValueError: empty prompt, a prompt that does not fit the cache, bad request ids.
    BudgetError (a ValueError): prompt + budget beyond the model's context length, or caches
      larger than the free memory (checked before anything is allocated).
  """
  if not prompts:
    raise ValueError("no prompts given")
  lens = [len(p) for p in prompts]
  if min(lens) == 0:
    raise ValueError(f"prompt {lens.index(0)} is empty; every prompt needs at least one token")
  longest = max(lens)
  if cache_capacity is None:
    cache_capacity = round_up(longest + gen_config.max_new_tokens, 64)
  if longest > cache_capacity:
    raise ValueError(
      f"prompt of {longest} tokens is longer than the KV cache ({cache_capacity} slots); "
      "shorten the prompt or raise the cache capacity"
    )
  if request_ids is None:
    request_ids = range(len(prompts))
  request_ids = np.asarray(list(request_ids), np.int32)
  if request_ids.shape != (len(prompts),):
    raise ValueError(f"need one request id per prompt, got {request_ids.shape[0]}")

  width = min(round_up(longest, 16), cache_capacity)
  if prompt_width is not None:
    if not longest <= prompt_width <= cache_capacity:
      raise ValueError(
        f"prompt_width {prompt_width} must hold the longest prompt ({longest}) and fit the "
        f"cache ({cache_capacity})"
      )
    width = prompt_width
  check_context(model_config, longest, gen_config.max_new_tokens)
  check_memory(model_config, len(prompts), cache_capacity, width)
  padded = pad_prompts(prompts, width, gen_config.pad_id)
  cache = KVCache.create(model_config, len(prompts), cache_capacity)
  static = dict(model_config=model_config, gen_config=gen_config)

  prefill_args = (params, padded, np.asarray(lens, np.int32), cache, request_ids, np.uint32(seed))
  run_prefill, compile_seconds = _compile(_prefill_jit, *prefill_args, **static)
  start = time.perf_counter()
  state = run_prefill(*prefill_args)
  jax.block_until_ready(state.last_token)
  prefill_seconds = time.perf_counter() - start

  run_decode, seconds = _compile(_decode_jit, params, state, np.int32(0), **static)
  compile_seconds += seconds
  if progress is not None and hasattr(progress, "reset"):
    progress.reset()  # so a tqdm bar's rate excludes compilation
  start = time.perf_counter()
  budget = gen_config.max_new_tokens - 1
  chunk = budget if not steps_per_call else steps_per_call
  while budget > 0 and not bool(jnp.all(state.done)):
    before = int(state.num_generated.sum()) if progress is not None else 0
    state = run_decode(params, state, np.int32(min(chunk, budget)))
    budget -= min(chunk, budget)
    if progress is not None:  # counts generated tokens
      progress.update(int(state.num_generated.sum()) - before)
  jax.block_until_ready(state.tokens)
  decode_seconds = time.perf_counter() - start
  done_steps = int(state.steps)

  tokens_np = np.asarray(state.tokens)
  counts = np.asarray(state.num_generated)
  out = [tokens_np[row, : counts[row]].tolist() for row in range(len(prompts))]
  return GenerateResult(out, prefill_seconds, decode_seconds, done_steps, compile_seconds)
