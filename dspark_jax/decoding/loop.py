"""Speculative decoding: propose -> verify -> accept -> commit in one jitted `lax.while_loop`.

Each round, for every row: the drafter proposes G tokens after the anchor; the target scores the
anchor and the drafts in one forward (G + 1 positions); verification keeps a ragged number of
drafts per row and draws the next token; both caches roll back by setting their lengths. Rows
stop at a stop token, at their token budget, or when another round would not fit the cache.
With every verification length 0 this is plain decoding, one token per round; a round in which
no active row has anything to verify (say, the n-gram drafter found no match) runs a one-token
target step instead of the (G + 1)-token block, since fixed shapes would otherwise pay for it.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from dspark_jax.config import ModelConfig
from dspark_jax.decoding import scheduler
from dspark_jax.decoding.budget import check_context, check_memory
from dspark_jax.decoding.generate import (
  GenerateConfig,
  _compile,
  pad_prompts,
  prefill_first_token,
  round_up,
)
from dspark_jax.decoding.sampling import RowSampling
from dspark_jax.decoding.verify import verify
from dspark_jax.models.kv_cache import KVCache
from dspark_jax.models.transformer import forward

# A speculative run's static settings are a plain run's (budget, sampling, stops, padding).
SpecConfig = GenerateConfig


@struct.dataclass
class SpecStats:
  rounds: jax.Array  # [B] rounds run while the row was active
  admitted: jax.Array  # [B, G] rounds in which slot k was verified
  accepted: jax.Array  # [B, G] rounds in which slot k was accepted (all before it too)
  reached: jax.Array  # [B, G] rounds in which slot k was verified with all before it accepted
  drafted: jax.Array  # [B] rounds in which the row was active and the batch drafted
  committed: jax.Array  # [B] tokens committed by rounds (the prefill's first token excluded)
  # [B] tokens the rounds count toward tau: accepted drafts plus the bonus token, except that a
  # round reaching a stop token counts only its accepted drafts, up to the stop (docs/method.md
  # section 4).
  counted: jax.Array


@struct.dataclass
class RoundTrace:
  """What each round proposed and what survived, for calibration: column r of a row is that
  row's r-th round; columns after its last round keep the fill (NaN, -1)."""

  confidence: jax.Array  # [B, R, G] float32 the proposal's per-slot confidence (NaN: none)
  verified: jax.Array  # [B, R] int32 slots verified (-1: no round)
  accepted: jax.Array  # [B, R] int32 drafts accepted


@struct.dataclass
class SpecState:
  tokens: jax.Array  # [B, N] generated tokens, N = max_new_tokens
  num_generated: jax.Array  # [B]
  anchor: jax.Array  # [B] newest token, not yet in the target cache
  cache: KVCache  # target cache: every committed token before the anchor
  draft_state: Any
  verify_len: jax.Array  # [B] int32, per-row verification length (<= G)
  done: jax.Array  # [B] bool
  request_ids: jax.Array  # [B]
  seed: jax.Array  # [] uint32, or [B]: one seed per row (the serving engine)
  stats: SpecStats
  schedule: scheduler.ScheduleState
  trace: RoundTrace | None = None  # recorded only when asked (speculative_generate(trace=True))
  # Per-row sampling parameters and token budgets (the serving engine's slots); None: every row
  # uses `spec.sampling` and `spec.max_new_tokens`.
  sampling: RowSampling | None = None
  max_tokens: jax.Array | None = None  # [B] int32, each <= spec.max_new_tokens


def _stop_index(block_BxK: jax.Array, count_B: jax.Array, stop_ids) -> jax.Array:
  """Index of the first stop token among the first `count` entries, or `count` if none."""
  k = block_BxK.shape[1]
  if not stop_ids:
    return count_B
  is_stop = jnp.isin(block_BxK, jnp.asarray(stop_ids, jnp.int32)) & (
    jnp.arange(k)[None] < count_B[:, None]
  )
  return jnp.where(jnp.any(is_stop, axis=1), jnp.argmax(is_stop, axis=1), count_B)


def spec_prefill(
  target_params,
  draft_params,
  prompts_BxP,
  prompt_lens_B,
  cache,
  request_ids_B,
  seed,
  verify_len_B,
  *,
  target_config: ModelConfig,
  drafter,
  spec: SpecConfig,
  trace: bool = False,
  sampling: RowSampling | None = None,
  max_tokens_B: jax.Array | None = None,
) -> SpecState:
  """Target prefill (with the drafter's feature layers), first token, drafter state.

  `sampling` and `max_tokens_B` give each row its own sampling parameters and token budget
  (kept in the state for every later round); by default every row uses `spec`'s."""
  batch = prompts_BxP.shape[0]
  limit = spec.max_new_tokens if max_tokens_B is None else max_tokens_B
  out, first = prefill_first_token(
    target_params,
    prompts_BxP,
    prompt_lens_B,
    cache,
    request_ids_B,
    seed,
    target_config,
    spec.sampling if sampling is None else sampling,
    drafter.feature_layers,
  )
  cache = out.cache
  draft_state = drafter.init_state(
    draft_params, out.features, prompts_BxP, prompt_lens_B, cache.capacity
  )
  tokens = jnp.full((batch, spec.max_new_tokens), spec.pad_id, jnp.int32).at[:, 0].set(first)
  g = drafter.draft_len
  stopped = _stop_index(first[:, None], jnp.ones_like(prompt_lens_B), spec.stop_ids) == 0
  done = stopped | (limit <= 1) | (prompt_lens_B + g + 1 > cache.capacity)
  zeros_b = jnp.zeros((batch,), jnp.int32)
  zeros_bg = jnp.zeros((batch, g), jnp.int32)
  stats = SpecStats(zeros_b, zeros_bg, zeros_bg, zeros_bg, zeros_b, zeros_b, zeros_b)
  rounds = spec.max_new_tokens  # every round commits at least one token
  record = None
  if trace:
    record = RoundTrace(
      jnp.full((batch, rounds, g), jnp.nan, jnp.float32),
      jnp.full((batch, rounds), -1, jnp.int32),
      jnp.full((batch, rounds), -1, jnp.int32),
    )
  return SpecState(
    tokens,
    jnp.ones((batch,), jnp.int32),
    first,
    cache,
    draft_state,
    verify_len_B,
    done,
    request_ids_B,
    seed,
    stats,
    scheduler.initial_state(batch, g),
    record,
    sampling,
    None if max_tokens_B is None else jnp.asarray(max_tokens_B, jnp.int32),
  )


def spec_decode(
  target_params,
  draft_params,
  state: SpecState,
  max_rounds,
  *,
  target_config: ModelConfig,
  drafter,
  spec: SpecConfig,
  schedule=None,
) -> SpecState:
  """Up to `max_rounds` rounds; stops early when every row is done.

  `schedule` is a policy of `decoding.scheduler` (None: every row verifies its `verify_len`).
  The target's forward runs at the smallest compiled width that holds the round's widest row
  (`lax.switch`), so slots no row verifies cost nothing.
  """
  g = drafter.draft_len
  policy = scheduler.Fixed(g) if schedule is None else schedule
  widths = _widths_of(policy, g)
  can_skip = scheduler.may_skip_drafting(policy) and getattr(
    getattr(drafter, "inner", drafter), "stateless_propose", False
  )

  def cond(carry):
    rounds, s = carry
    return (rounds < max_rounds) & ~jnp.all(s.done)

  def body(carry):
    rounds, s = carry
    anchor_pos = s.cache.lengths  # slot == position: the cache is contiguous per row
    active = ~s.done
    sampling = spec.sampling if s.sampling is None else s.sampling
    limit = spec.max_new_tokens if s.max_tokens is None else s.max_tokens

    def propose(draft_state):
      return drafter.propose(
        draft_params, draft_state, s.anchor, anchor_pos, sampling, s.seed, s.request_ids
      )

    if can_skip:
      # A plain round: no proposal (its slots are never verified), the drafter's state as is.
      skipped = jax.tree.map(
        lambda x: jnp.zeros(x.shape, x.dtype), jax.eval_shape(propose, s.draft_state)[0]
      )
      drafted = scheduler.should_draft(policy, s.schedule)
      proposal, draft_state = jax.lax.cond(
        drafted, propose, lambda ds: (skipped, ds), s.draft_state
      )
    else:
      drafted = jnp.bool_(True)
      proposal, draft_state = propose(s.draft_state)
    cap = s.verify_len
    if proposal.num_valid is not None:
      cap = jnp.minimum(cap, proposal.num_valid)
    confidence = proposal.confidence
    if confidence is None:
      if not isinstance(policy, scheduler.Fixed):
        raise ValueError(
          f"the {type(policy).__name__} schedule needs a drafter with a confidence head"
        )
      confidence = jnp.ones(proposal.tokens.shape, jnp.float32)
    lengths, planned = policy.lengths(confidence, cap, active, s.schedule)
    lengths = jnp.where(drafted & active, lengths, 0).astype(jnp.int32)
    block = jnp.concatenate([s.anchor[:, None], proposal.tokens], axis=1)  # [B, G+1]
    positions = anchor_pos[:, None] + jnp.arange(g + 1)[None]
    score = functools.partial(
      forward,
      target_params,
      config=target_config,
      feature_layers=drafter.feature_layers,
      write_cache=False,
    )

    def score_width(w):
      def run(block, positions, cache):
        # The first w positions only, padded back to the block's shape: slots at or past w
        # are never read, since no row verifies more than w - 1 drafts this round.
        out = score(block[:, :w], positions[:, :w], cache)
        pad = lambda x, axis: jnp.pad(
          x, [(0, g + 1 - w) if a == axis else (0, 0) for a in range(x.ndim)]
        )
        entries = jax.tree.map(lambda x: pad(x, 2), out.new_entries)
        features = None if out.features is None else pad(out.features, 1)
        return pad(out.logits, 1), features, entries

      return run

    if len(widths) == 1:  # Fixed(0): no switch, the forward writes its own entries
      out = score(block[:, :1], positions[:, :1], s.cache, write_cache=True)
      widen = lambda x: None if x is None else jnp.repeat(x, g + 1, axis=1)
      logits, features, cache = widen(out.logits), widen(out.features), out.cache
    else:
      needed = 1 + jnp.max(jnp.where(active, lengths, 0))
      index = jnp.minimum(scheduler.width_index(widths, needed), len(widths) - 1)
      logits, features, entries = jax.lax.switch(
        index, [score_width(w) for w in widths], block, positions, s.cache
      )
      # The cache is written here, outside the switch, so XLA updates it in place (G + 1
      # entries; those past a row's new length are rolled back below and never read).
      cache = s.cache.write_entries(entries)
    keys = (sampling, s.seed, s.request_ids, anchor_pos + 1)
    verify_drafts = lambda: verify(logits, proposal.tokens, proposal.logits, lengths, *keys)
    if can_skip:
      # A plain round verifies nothing: only the anchor's logits are read (the same draw as
      # verifying 0 drafts), not G + 1 padded slots and G skipped proposals.
      no_drafts = lambda: verify(
        logits[:, :1], proposal.tokens[:, :0], proposal.logits[:, :0], lengths, *keys
      )
      num_acc, next_token = jax.lax.cond(drafted, verify_drafts, no_drafts)
    else:
      num_acc, next_token = verify_drafts()
    draft_state = drafter.commit(draft_params, draft_state, proposal, s.anchor, features, num_acc)
    sched = scheduler.advance(policy, s.schedule, drafted, confidence, planned, active.sum())

    # New tokens of the round: the accepted drafts, then the verification's token.
    slot = jnp.arange(g + 1)[None]
    drafts = jnp.pad(proposal.tokens, ((0, 0), (0, 1)))
    new = jnp.where(slot < num_acc[:, None], drafts, next_token[:, None])
    count = num_acc + 1
    stop_at = _stop_index(new, count, spec.stop_ids)
    hit_stop = stop_at < count
    count = jnp.minimum(jnp.where(hit_stop, stop_at + 1, count), limit - s.num_generated)
    count = jnp.where(active, count, 0)
    columns = jnp.where(slot < count[:, None], s.num_generated[:, None] + slot, spec.max_new_tokens)
    rows = jnp.arange(new.shape[0])[:, None]
    tokens = s.tokens.at[rows, columns].set(new, mode="drop")
    num_generated = s.num_generated + count

    new_len = jnp.where(active, anchor_pos + 1 + num_acc, anchor_pos)
    cache = cache.with_lengths(new_len)
    done = s.done | hit_stop | (num_generated >= limit) | (new_len + g + 1 > cache.capacity)

    admitted_k = (jnp.arange(g)[None] < lengths[:, None]) & active[:, None]
    accepted_k = (jnp.arange(g)[None] < num_acc[:, None]) & active[:, None]
    st = s.stats
    stats = SpecStats(
      rounds=st.rounds + active.astype(jnp.int32),
      admitted=st.admitted + admitted_k.astype(jnp.int32),
      accepted=st.accepted + accepted_k.astype(jnp.int32),
      reached=st.reached
      + (admitted_k & (jnp.arange(g)[None] <= num_acc[:, None])).astype(jnp.int32),
      drafted=st.drafted + (active & drafted).astype(jnp.int32),
      committed=st.committed + count,
      counted=st.counted
      + jnp.where(active, jnp.where(hit_stop, jnp.minimum(num_acc, stop_at + 1), num_acc + 1), 0),
    )
    record = s.trace
    if record is not None:
      col = jnp.where(active, st.rounds, record.verified.shape[1])  # out of range: dropped
      rows_b = jnp.arange(col.shape[0])
      conf = proposal.confidence
      conf = jnp.full((col.shape[0], g), jnp.nan) if conf is None else conf
      record = RoundTrace(
        record.confidence.at[rows_b, col].set(conf.astype(jnp.float32), mode="drop"),
        record.verified.at[rows_b, col].set(lengths, mode="drop"),
        record.accepted.at[rows_b, col].set(num_acc, mode="drop"),
      )
    anchor = jnp.where(active, next_token, s.anchor)
    s = s.replace(
      tokens=tokens,
      num_generated=num_generated,
      anchor=anchor,
      cache=cache,
      draft_state=draft_state,
      done=done,
      stats=stats,
      schedule=sched,
      trace=record,
    )
    return rounds + 1, s

  _, state = jax.lax.while_loop(cond, body, (jnp.int32(0), state))
  return state


def _widths_of(policy, draft_len: int) -> tuple[int, ...]:
  """The compiled verification widths of a policy: a fixed length needs only its own width
  (and 1, for rounds in which no row verifies anything); the others all of the defaults."""
  if isinstance(policy, scheduler.Fixed):
    return tuple(sorted({1, min(policy.k, draft_len) + 1}))
  return scheduler.compiled_widths(draft_len)


_STATIC = ("target_config", "drafter", "spec")
_prefill_jit = jax.jit(spec_prefill, static_argnames=(*_STATIC, "trace"))
_decode_jit = jax.jit(
  spec_decode, static_argnames=(*_STATIC, "schedule"), donate_argnames=("state",)
)


@dataclasses.dataclass
class SpecResult:
  tokens: list[list[int]]
  rounds: np.ndarray  # [B]
  admitted: np.ndarray  # [B, G]
  accepted: np.ndarray  # [B, G]
  reached: np.ndarray  # [B, G]
  committed: np.ndarray  # [B]
  counted: np.ndarray  # [B] tokens counted toward tau (see SpecStats)
  drafted: np.ndarray  # [B] rounds that drafted (the rest were plain steps)
  prefill_seconds: float
  decode_seconds: float
  compile_seconds: float
  trace: RoundTrace | None = None  # NumPy arrays; with speculative_generate(trace=True)

  @property
  def num_tokens(self) -> int:
    return sum(len(t) for t in self.tokens)

  @property
  def tokens_per_second(self) -> float:
    return self.num_tokens / max(self.prefill_seconds + self.decode_seconds, 1e-9)

  @property
  def mean_verified_length(self) -> float:
    """Drafts verified per round (0 in a plain round)."""
    return float(self.admitted.sum() / max(self.rounds.sum(), 1))

  @property
  def drafted_share(self) -> float:
    """Share of rounds that drafted."""
    return float(self.drafted.sum() / max(self.rounds.sum(), 1))

  @property
  def mean_accepted_length(self) -> float:
    """Tokens committed per round, the bonus/replacement token included (tau)."""
    return float(self.committed.sum() / max(self.rounds.sum(), 1))


def _draft_cache_bytes(drafter, target: ModelConfig, batch: int, capacity: int) -> int:
  """Bytes of a trained drafter's context cache (its own layers, as many slots as the target)."""
  config = getattr(getattr(drafter, "inner", drafter), "config", None)
  if config is None or not hasattr(config, "backbone_config"):
    return 0  # the n-gram drafter keeps no cache
  return KVCache.bytes_needed(config.backbone_config(target), batch, capacity)


def speculative_generate(
  target_params,
  target_config: ModelConfig,
  drafter,
  draft_params,
  prompts: Sequence[Sequence[int]],
  spec: SpecConfig,
  *,
  seed: int = 0,
  request_ids: Sequence[int] | None = None,
  verify_len: Sequence[int] | None = None,
  cache_capacity: int | None = None,
  rounds_per_call: int | None = None,
  progress: Any = None,
  trace: bool = False,
  schedule=None,
) -> SpecResult:
  """Speculative generation for a batch of token prompts of different lengths.

  Args:
    verify_len: per-row verification length (0..G; default G for every row).
    cache_capacity: KV slots per row (default: longest prompt + budget + G + 1, rounded up to
      64); it must leave room for one verification block after the budget.
    trace: also return each round's proposal confidences, verified and accepted lengths
      (`SpecResult.trace`, for calibration); the output is the same either way.
    schedule: a `decoding.scheduler` policy choosing each round's verification lengths
      (capped by verify_len); None verifies verify_len slots every round.
    Other arguments as in `generate.generate`.

  Raises:
    ValueError: vocabulary mismatch, bad lengths, empty prompts, or a budget beyond the cache.
    BudgetError (a ValueError): prompt + budget beyond the model's context length, or caches
      larger than the free memory (checked before anything is allocated).
  """
  g = drafter.draft_len
  if getattr(drafter, "vocab_size", target_config.vocab_size) != target_config.vocab_size:
    raise ValueError(
      f"drafter vocabulary ({drafter.vocab_size}) differs from the target's "
      f"({target_config.vocab_size}); drafter and target must share one tokenizer"
    )
  if not prompts or min(len(p) for p in prompts) == 0:
    raise ValueError("every prompt needs at least one token")
  batch = len(prompts)
  longest = max(len(p) for p in prompts)
  need = longest + spec.max_new_tokens + g + 1
  if cache_capacity is None:
    cache_capacity = round_up(need, 64)
  if need > cache_capacity:
    raise ValueError(
      f"prompt ({longest} tokens) + max_new_tokens ({spec.max_new_tokens}) + a verification "
      f"block ({g + 1}) needs {need} cache slots; the cache has {cache_capacity}"
    )
  verify_len = np.full(batch, g, np.int32) if verify_len is None else np.asarray(verify_len)
  if verify_len.shape != (batch,) or verify_len.min() < 0 or verify_len.max() > g:
    raise ValueError(f"verify_len must hold one length in [0, {g}] per prompt")
  request_ids = (
    np.arange(batch, dtype=np.int32) if request_ids is None else np.asarray(request_ids, np.int32)
  )

  width = min(round_up(longest, 16), cache_capacity)
  check_context(target_config, longest, spec.max_new_tokens)
  check_memory(
    target_config,
    batch,
    cache_capacity,
    width,
    _draft_cache_bytes(drafter, target_config, batch, cache_capacity),
  )
  padded = pad_prompts(prompts, width, spec.pad_id)
  cache = KVCache.create(target_config, batch, cache_capacity)
  static = dict(target_config=target_config, drafter=drafter, spec=spec)
  args = (
    target_params,
    draft_params,
    padded,
    np.asarray([len(p) for p in prompts], np.int32),
    cache,
    request_ids,
    np.uint32(seed),
    verify_len.astype(np.int32),
  )
  run_prefill, compile_seconds = _compile(_prefill_jit, *args, **static, trace=trace)
  start = time.perf_counter()
  state = run_prefill(*args)
  jax.block_until_ready(state.anchor)
  prefill_seconds = time.perf_counter() - start

  run_decode, seconds = _compile(
    _decode_jit, target_params, draft_params, state, np.int32(0), **static, schedule=schedule
  )
  compile_seconds += seconds
  if progress is not None and hasattr(progress, "reset"):
    progress.reset()
  start = time.perf_counter()
  budget = spec.max_new_tokens  # rounds: at most one per token
  chunk = rounds_per_call or budget
  while budget > 0 and not bool(jnp.all(state.done)):
    before = int(state.num_generated.sum()) if progress is not None else 0
    state = run_decode(target_params, draft_params, state, np.int32(min(chunk, budget)))
    budget -= min(chunk, budget)
    if progress is not None:
      progress.update(int(state.num_generated.sum()) - before)
  jax.block_until_ready(state.tokens)
  decode_seconds = time.perf_counter() - start

  tokens = np.asarray(state.tokens)
  counts = np.asarray(state.num_generated)
  st = jax.tree.map(np.asarray, state.stats)
  return SpecResult(
    [tokens[r, : counts[r]].tolist() for r in range(batch)],
    st.rounds,
    st.admitted,
    st.accepted,
    st.reached,
    st.committed,
    st.counted,
    st.drafted,
    prefill_seconds,
    decode_seconds,
    compile_seconds,
    None if state.trace is None else jax.tree.map(np.asarray, state.trace),
  )
