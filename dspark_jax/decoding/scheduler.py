"""Confidence-scheduled verification: how many drafted slots each row verifies this round.

A policy maps the proposal's per-slot confidences c_{r,k} (P(slot k survives | slots < k
survived), after the drafter's STS temperatures) to per-row verification lengths l_r in
0..cap_r. The cumulative survival a_{r,j} = prod_{k <= j} c_{r,k} is the probability that the
first j drafts of row r are all accepted, so a round that verifies l_r slots of every row is
expected to commit sum_r (1 + sum_{j <= l_r} a_{r,j}) tokens (`docs/method.md` section 5).

Policies (frozen dataclasses, hashable: they are static arguments of the decode loop):
  Fixed(k)              l_r = k (the classic fixed draft length; k = 0 is plain decoding).
  Threshold(x, cum)     the leading slots with c_{r,k} >= x (cum: a_{r,k} >= x).
  Algorithm1(cost)      the paper's hardware-aware prefix scheduler: candidates in descending
                        a, each admitted while the round's planned throughput tau* / seconds
                        still rises; it stops at the first drop. On the padded XLA forward a
                        candidate is a slot level (every row's slot j; see the class).
  Async(cost)           the production variant: a budget of K candidates from a full search
                        (no early stop) over the confidences of two drafted rounds earlier,
                        then the top K candidates (r, j) by the current a_{r,j}.

Why each is lossless. Speculative sampling returns exact target samples for any number of
verified drafts, provided that number is chosen without looking at the drafts it decides about
(non-anticipating). c_{r,k} is computed from the block's hidden state and the previous token
x_{r,k-1}, never from x_{r,k}; so a_{r,j} depends on the row's drafts before slot j only.
  * Fixed and Threshold decide slot j from a_{r,<=j}: causal.
  * Algorithm1 admits slot j from a_{.,<=j}: the level's own gain and the levels before it.
    a_{r,j+1}, which depends on x_{r,j}, only enters after slot j is admitted. Searching on
    past the first drop would break this: a later, token-dependent candidate could then decide
    whether x_{r,j} is verified (the paper's Appendix A: (0.85, 0.15) instead of (0.7, 0.3);
    `tests/decoding/test_scheduler.py` reproduces both).
  * Async's K comes from rounds already committed; top-K admission of (r, j) depends only on
    the candidates ranked above it, which have a >= a_{r,j}.
Ties in a are broken by the flattened (row, slot) index (a stable sort), so a row's slots are
always admitted in order.

The cost model is a `CostTable`: seconds of a verification forward of every compiled width
(anchor + drafts, for this batch), of the drafter's proposal and of a plain step, measured by
`decoding.profile`. Algorithm1 and Async include the proposal's seconds in the round's time,
and may decide not to draft at all (`should_draft`): from the planned gain of the last drafted
round, which is information from before this round, so that decision is non-anticipating too.

Letters: B rows, G slots, W compiled widths.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

# Verification widths (anchor + drafts) compiled into the decode loop; the widest row of a
# round picks the smallest one that holds it. Chosen so a short admitted prefix costs a short
# forward while the number of compiled branches stays small.
# Every width is one more forward to compile into the loop (about 7 s each for SmolLM2 on a
# 2-core CPU), and on a memory-bound step widths 4..8 cost about the same, so 6 is left out.
DEFAULT_WIDTHS = (1, 2, 3, 4, 8)
# After a drafted round that did not pay, plain rounds run before the next probe: first
# MIN_PROBE_GAP, doubling up to MAX_PROBE_GAP while drafting keeps not paying. A probe costs one
# proposal (0.6-0.9 plain steps on this CPU) and buys only information, so the gaps bound what
# probing costs: a 96-token answer probes twice (rounds 0 and 33), a long one about once per
# 128 rounds. The price is up to 32 plain rounds before a drafter that starts paying is used
# again. Measured at batch 1 (SmolLM2, 96-token GSM8K answers, a drafter that never pays):
# gaps from 16 (3 probes) cost 8.8% over plain decoding, the plain rounds alone 2%.
MIN_PROBE_GAP, MAX_PROBE_GAP = 32, 128


def compiled_widths(draft_len: int, widths=DEFAULT_WIDTHS) -> tuple[int, ...]:
  """The verification widths for a drafter of G slots: those <= G + 1, and G + 1 itself."""
  return tuple(sorted({w for w in widths if 1 <= w <= draft_len} | {draft_len + 1}))


def width_index(widths: tuple[int, ...], needed: jax.Array) -> jax.Array:
  """Index of the smallest compiled width >= needed (int32 scalar or array)."""
  return jnp.searchsorted(jnp.asarray(widths, jnp.int32), needed, side="left").astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class CostTable:
  """Measured seconds on this machine for one batch size (`decoding.profile`).

  widths[i] tokens per row -> verify_seconds[i]; propose_seconds for the drafter's proposal;
  the plain step is the width-1 forward.
  """

  widths: tuple[int, ...]
  verify_seconds: tuple[float, ...]
  propose_seconds: float

  def __post_init__(self):
    if len(self.widths) != len(self.verify_seconds) or not self.widths:
      raise ValueError("a cost table needs one verification time per width")
    if self.widths[0] != 1 or list(self.widths) != sorted(set(self.widths)):
      raise ValueError(f"widths must be ascending and start at 1, got {self.widths}")
    if min(self.verify_seconds) <= 0 or self.propose_seconds < 0:
      raise ValueError("costs must be positive seconds")

  @property
  def plain_seconds(self) -> float:
    return self.verify_seconds[0]

  def seconds_of_width(self, needed: jax.Array) -> jax.Array:
    """Seconds of the forward that holds `needed` tokens per row (the next compiled width)."""
    idx = jnp.minimum(width_index(self.widths, needed), len(self.widths) - 1)
    return jnp.asarray(self.verify_seconds, jnp.float32)[idx]


@struct.dataclass
class ScheduleState:
  """What a policy carries from round to round (one per batch)."""

  history: jax.Array  # [2, B, G] cumulative survival of the last two drafted rounds (Async)
  gain: jax.Array  # [] planned throughput of the last drafted round over a plain step's
  wait: jax.Array  # [] int32 plain rounds left before the next drafted round
  gap: jax.Array  # [] int32 the current gap between probes


def initial_state(batch: int, draft_len: int) -> ScheduleState:
  return ScheduleState(
    # Before two rounds have drafted, Async plans as if every draft survived (an optimistic
    # prior, fixed before decoding starts): the first rounds verify what a perfect drafter
    # would, rather than nothing.
    history=jnp.ones((2, batch, draft_len), jnp.float32),
    gain=jnp.float32(1.0),
    wait=jnp.int32(0),
    gap=jnp.int32(MIN_PROBE_GAP),
  )


def survival(confidence_BxG: jax.Array) -> jax.Array:
  """a_{r,j} = prod_{k <= j} c_{r,k}: P(the first j drafts are all accepted)."""
  return jnp.cumprod(jnp.clip(confidence_BxG.astype(jnp.float32), 0.0, 1.0), axis=1)


def _allowed(b: int, g: int, cap_B, active_B):
  return (jnp.arange(g)[None] < cap_B[:, None]) & active_B[:, None]


def _level_throughput(a_BxG, cap_B, active_B, cost: CostTable):
  """Theta_L, L = 0..G: planned tokens per second of a round that verifies slots 1..L of every
  row (within its cap), the proposal's seconds included. [G + 1]."""
  b, g = a_BxG.shape
  gain = jnp.where(_allowed(b, g, cap_B, active_B), a_BxG, 0.0).sum(axis=0)  # [G]
  tau = active_B.sum() + jnp.concatenate([jnp.zeros(1), jnp.cumsum(gain)])
  seconds = cost.propose_seconds + cost.seconds_of_width(1 + jnp.arange(g + 1))
  return tau / seconds


def _top_candidates(a_BxG, allowed_BxG, budget):
  """Per-row lengths admitting the `budget` best candidates (r, j) by a (stable order: ties
  by flattened index, so a row's slots enter in order)."""
  b, g = a_BxG.shape
  flat = jnp.where(allowed_BxG, a_BxG, -1.0).reshape(-1)
  order = jnp.argsort(-flat, stable=True)
  admitted = (jnp.arange(flat.size) < budget) & (flat[order] >= 0)
  return jax.ops.segment_sum(admitted.astype(jnp.int32), order // g, num_segments=b)


@dataclasses.dataclass(frozen=True)
class Fixed:
  k: int

  gated = False

  def lengths(self, confidence_BxG, cap_B, active_B, state: ScheduleState):
    del confidence_BxG, state
    return jnp.where(active_B, jnp.minimum(cap_B, self.k), 0), None


@dataclasses.dataclass(frozen=True)
class Threshold:
  threshold: float
  cumulative: bool = False

  gated = False

  def lengths(self, confidence_BxG, cap_B, active_B, state: ScheduleState):
    del state
    c = survival(confidence_BxG) if self.cumulative else confidence_BxG.astype(jnp.float32)
    leading = jnp.cumprod(c >= self.threshold, axis=1).sum(axis=1).astype(jnp.int32)
    return jnp.where(active_B, jnp.minimum(leading, cap_B), 0), None


@dataclasses.dataclass(frozen=True)
class Algorithm1:
  """The paper's greedy search with its early stop, on the padded verification forward.

  The XLA forward costs by its width (the widest row), not by its token count, so a candidate
  is a slot level j: verifying slot j of every row (within its cap) adds sum_r a_{r,j} to tau*
  and costs the forward of width j + 1 (`CostTable`, rows x width). Levels are visited in
  order (a_{r,j} never increases with j, so this is the descending order of each row's
  candidates) and the search stops at the first level that lowers the planned throughput.
  Level j's admission uses a_{.,<=j} only, which depend on drafts before slot j: causal. At
  batch 1 this is exactly the paper's per-candidate search.
  """

  cost: CostTable

  gated = True

  def lengths(self, confidence_BxG, cap_B, active_B, state: ScheduleState):
    del state
    theta = _level_throughput(survival(confidence_BxG), cap_B, active_B, self.cost)
    level = jnp.cumprod(theta[1:] > theta[:-1]).sum().astype(jnp.int32)  # first drop
    return jnp.where(active_B, jnp.minimum(cap_B, level), 0), theta[level]


@dataclasses.dataclass(frozen=True)
class Async:
  """The production variant: the budget K (candidates) comes from a full search, with no early
  stop, over the levels of the confidences of two drafted rounds ago; this round admits its K
  best candidates (r, j) by the current a_{r,j}. K is fixed before this round's drafts exist,
  and each admission depends only on the candidates ranked above it: causal."""

  cost: CostTable

  gated = True

  def lengths(self, confidence_BxG, cap_B, active_B, state: ScheduleState):
    b, g = confidence_BxG.shape
    allowed = _allowed(b, g, cap_B, active_B)
    old = _level_throughput(state.history[0], cap_B, active_B, self.cost)
    level = jnp.argmax(old)
    budget = (allowed & (jnp.arange(g)[None] < level)).sum()
    a = survival(confidence_BxG)
    lengths = _top_candidates(a, allowed, budget)
    theta = _level_throughput(a, lengths, active_B, self.cost)
    return lengths, theta[jnp.max(lengths)]


POLICIES = ("fixed", "threshold", "alg1", "async")


def may_skip_drafting(policy) -> bool:
  """Whether a policy ever runs a round without a proposal (static): the cost-aware ones, and
  Fixed(0), which is plain decoding."""
  return policy.gated or (isinstance(policy, Fixed) and policy.k == 0)


def should_draft(policy, state: ScheduleState) -> jax.Array:
  """Whether this round drafts: always for ungated policies; for cost-aware ones, unless the
  last drafted round planned less throughput than a plain step, in which case plain rounds run
  until the next probe."""
  if isinstance(policy, Fixed) and policy.k == 0:
    return jnp.bool_(False)  # plain decoding: a proposal would never be verified
  if not policy.gated:
    return jnp.bool_(True)
  return state.wait <= 0


def advance(policy, state: ScheduleState, drafted, confidence_BxG, planned, num_active):
  """The state after a round: `planned` is the policy's planned throughput (tokens / s) of a
  drafted round (ignored when it did not draft)."""
  if not policy.gated:
    return state
  a = survival(confidence_BxG)
  history = jnp.where(drafted, jnp.stack([state.history[1], a]), state.history)
  plain = jnp.maximum(num_active, 1) / policy.cost.plain_seconds
  gain = jnp.where(drafted, planned / plain, state.gain)
  pays = gain >= 1.0
  # A drafted round that pays keeps drafting; one that does not waits `gap` plain rounds and
  # doubles the gap; plain rounds count the wait down.
  wait = jnp.where(drafted, jnp.where(pays, 0, state.gap), state.wait - 1)
  gap = jnp.where(
    drafted, jnp.where(pays, MIN_PROBE_GAP, jnp.minimum(2 * state.gap, MAX_PROBE_GAP)), state.gap
  )
  return ScheduleState(history, gain.astype(jnp.float32), wait.astype(jnp.int32), gap)
