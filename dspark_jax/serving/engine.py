"""The serving engine: continuous batching over a fixed number of decode slots.

The shape is JetStream's orchestrator (and MaxText's offline engine): the device state is one
`SpecState` pytree of B slots; the host loop is thin. Each tick:

1. admit: waiting requests are prefilled one at a time (batch 1, prompt padded to a power-of-two
   bucket) and inserted into free slots (`slots.insert`, one `tree.map`);
2. decode: one jitted speculative round over all B slots with the schedule (a finished or
   empty slot is marked done and skipped by the round);
3. stream: each request's newly committed tokens go to its consumer;
4. retire: finished requests leave (their slot is free for the next tick).

Per-slot sampling: temperature, top-k, top-p, seed and token budget are arrays in the state
(`RowSampling`, `SpecState.max_tokens`, a [B] seed). Every draw is keyed by (request seed,
0, position), so a request's output depends only on its prompt and parameters, never on its
slot, its neighbours or when it arrived: a request with seed s gives what
`speculative_generate(..., seed=s)` (and `generate`) give for that prompt alone. A request
without a seed gets a fresh random one.

Stop ids: the model's end-of-turn ids stop a slot on the device; a request's own `stop_ids`
are checked on the host as tokens stream (the slot is then marked done on the device).

Thread model: `submit` may be called from any thread; `step` / `run` (every JAX call) from one
thread only. `start()` runs the loop in a daemon thread; `shutdown(drain=True)` stops taking
requests, lets the in-flight ones finish and stops the thread.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import queue
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dspark_jax.config import ModelConfig
from dspark_jax.decoding.budget import check_memory
from dspark_jax.decoding.generate import pad_prompts
from dspark_jax.decoding.loop import SpecConfig, SpecState, _draft_cache_bytes
from dspark_jax.decoding.loop import _decode_jit as _decode
from dspark_jax.decoding.loop import _prefill_jit as _prefill
from dspark_jax.decoding.sampling import RowSampling, SamplingParams
from dspark_jax.models.kv_cache import KVCache
from dspark_jax.serving.slots import insert_jit

MIN_BUCKET = 16  # smallest prompt bucket (tokens); buckets double up to the cache capacity

# The loop's own jitted prefill and round (the same static arguments), so the engine and
# `speculative_generate` share compiled code.


@dataclasses.dataclass(frozen=True)
class Request:
  """One generation request (token ids in, token ids out)."""

  prompt: tuple[int, ...]
  max_tokens: int
  sampling: SamplingParams = SamplingParams()
  seed: int | None = None  # None: a fresh random seed
  stop_ids: tuple[int, ...] = ()  # extra stop tokens (the model's own always stop)


@dataclasses.dataclass
class RequestMetrics:
  submitted: float  # time.perf_counter() at submit
  first_token: float | None = None
  finished: float | None = None
  tokens: int = 0
  rounds: int = 0  # speculative rounds the request was in
  committed: int = 0  # tokens those rounds committed (the prefill's first token excluded)
  verified: int = 0  # drafts verified over all its rounds
  drafted: int = 0  # rounds in which the batch drafted

  @property
  def time_to_first_token(self) -> float | None:
    return None if self.first_token is None else self.first_token - self.submitted

  @property
  def tokens_per_second(self) -> float | None:
    """Decode speed the user saw: tokens after the first over the time after the first."""
    if self.finished is None or self.first_token is None or self.tokens < 2:
      return None
    return (self.tokens - 1) / max(self.finished - self.first_token, 1e-9)

  @property
  def accepted_per_round(self) -> float | None:
    """Tokens committed per round, the bonus token included (tau)."""
    return self.committed / self.rounds if self.rounds else None

  @property
  def verified_per_round(self) -> float | None:
    return self.verified / self.rounds if self.rounds else None


@dataclasses.dataclass
class Event:
  """What a consumer receives: new tokens, and at the end a finish reason with the metrics."""

  tokens: list[int]
  finish_reason: str | None = None  # "stop", "length", "cancelled", "error"
  metrics: RequestMetrics | None = None
  error: str | None = None


class RequestHandle:
  """A submitted request: its events arrive on `events` (or at `on_event`, from the engine's
  thread: keep it quick and thread-safe)."""

  def __init__(self, request_id: int, request: Request, on_event: Callable[[Event], Any] | None):
    self.id = request_id
    self.request = request
    self.metrics = RequestMetrics(time.perf_counter())
    self.events: queue.Queue[Event] = queue.Queue()
    self._on_event = on_event
    self.cancelled = False
    self.finished = threading.Event()
    self.seed = 0

  def cancel(self) -> None:
    """Frees the request's slot at the engine's next tick (a client that went away)."""
    self.cancelled = True

  def _emit(self, event: Event) -> None:
    if event.finish_reason is not None:
      self.finished.set()
    (self._on_event or self.events.put)(event)

  def result(self, timeout: float | None = None) -> tuple[list[int], str, RequestMetrics]:
    """Blocks until the request finishes: (tokens, finish reason, metrics)."""
    tokens: list[int] = []
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
      left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
      event = self.events.get(timeout=left)
      tokens += event.tokens
      if event.finish_reason is not None:
        if event.finish_reason == "error":
          raise RuntimeError(event.error)
        return tokens, event.finish_reason, event.metrics


class EngineClosed(RuntimeError):
  """The engine is shutting down and takes no new requests."""


class Engine:
  """Continuous batching of speculative decoding over `slots` decode slots.

  Args:
    target_params, target_config: the target model.
    drafter, draft_params: any drafter of `dspark_jax.drafters` (a `PrefixDrafter` for fewer
      verified slots); with `schedule=scheduler.Fixed(0)` this is plain decoding.
    slots: B, requests decoded at once.
    max_context: KV slots per request: prompt + max_tokens + G + 1 must fit.
    max_tokens: the largest max_tokens a request may ask (the token buffer's width).
    schedule: a `decoding.scheduler` policy (None: every slot verifies all G drafts).
    stop_ids, pad_id: the model's end-of-turn ids and padding id.
  """

  def __init__(
    self,
    target_params,
    target_config: ModelConfig,
    drafter,
    draft_params,
    *,
    slots: int = 8,
    max_context: int = 1024,
    max_tokens: int = 512,
    schedule=None,
    stop_ids: tuple[int, ...] = (),
    pad_id: int = 0,
  ):
    if slots < 1:
      raise ValueError(f"slots must be >= 1, got {slots}")
    if max_tokens < 1 or max_context < MIN_BUCKET + max_tokens:
      raise ValueError(
        f"max_context ({max_context}) must hold a {MIN_BUCKET}-token prompt bucket plus "
        f"max_tokens ({max_tokens})"
      )
    if getattr(drafter, "vocab_size", target_config.vocab_size) != target_config.vocab_size:
      raise ValueError("drafter and target must share one vocabulary")
    check_memory(
      target_config,
      slots,
      max_context,
      max_context,
      _draft_cache_bytes(drafter, target_config, slots, max_context),
    )
    self.target_params, self.target_config = target_params, target_config
    self.drafter, self.draft_params, self.schedule = drafter, draft_params, schedule
    self.num_slots, self.capacity, self.max_tokens = slots, max_context, max_tokens
    self.spec = SpecConfig(max_tokens, SamplingParams(), stop_ids=tuple(stop_ids), pad_id=pad_id)
    self._static = dict(target_config=target_config, drafter=drafter, spec=self.spec)
    self._inbox: queue.Queue[RequestHandle] = queue.Queue()
    self._waiting: collections.deque[RequestHandle] = collections.deque()
    self._slots: list[RequestHandle | None] = [None] * slots
    self._sent = np.zeros(slots, np.int64)  # tokens streamed per slot
    self._ids = itertools.count(1)
    self._closed = False
    self._thread: threading.Thread | None = None
    self._stop = threading.Event()
    self.ticks = 0
    self.state = self._empty_state()

  # -- requests (any thread) -------------------------------------------------------------------

  def check(self, request: Request) -> None:
    """Raises ValueError if the engine cannot serve the request (before it is queued)."""
    n = len(request.prompt)
    if n == 0:
      raise ValueError("the prompt is empty")
    if not 1 <= request.max_tokens <= self.max_tokens:
      raise ValueError(f"max_tokens must be in [1, {self.max_tokens}], got {request.max_tokens}")
    vocab = self.target_config.vocab_size
    if min(request.prompt) < 0 or max(request.prompt) >= vocab:
      raise ValueError(f"prompt token ids must be in [0, {vocab})")
    need = n + request.max_tokens + self.drafter.draft_len + 1
    if need > self.capacity:
      raise ValueError(
        f"prompt ({n} tokens) + max_tokens ({request.max_tokens}) + a verification block "
        f"({self.drafter.draft_len + 1}) = {need} exceeds the context of {self.capacity} tokens"
      )
    if request.seed is not None and not 0 <= request.seed < 2**32:
      raise ValueError(f"seed must be in [0, 2**32), got {request.seed}")

  def submit(self, request: Request, on_event: Callable[[Event], Any] | None = None):
    """Queues a request; returns its `RequestHandle`. Raises ValueError for a bad request and
    `EngineClosed` while shutting down."""
    if self._closed:
      raise EngineClosed("the engine is shutting down")
    self.check(request)
    handle = RequestHandle(next(self._ids), request, on_event)
    handle.seed = secrets.randbits(31) if request.seed is None else request.seed
    self._inbox.put(handle)
    return handle

  @property
  def busy_slots(self) -> int:
    return sum(h is not None for h in self._slots)

  @property
  def pending(self) -> int:
    """Requests queued or in a slot."""
    return self._inbox.qsize() + len(self._waiting) + self.busy_slots

  # -- the loop (one thread) -------------------------------------------------------------------

  def step(self) -> bool:
    """One tick (admit, one round, stream, retire). Returns whether any request is left."""
    while True:
      try:
        self._waiting.append(self._inbox.get_nowait())
      except queue.Empty:
        break
    self._drop_cancelled()
    self._admit()
    if self.busy_slots:
      self.state = _decode(
        self.target_params,
        self.draft_params,
        self.state,
        np.int32(1),
        **self._static,
        schedule=self.schedule,
      )
      self.ticks += 1
      self._stream()
    return bool(self.pending)

  def run_until_idle(self) -> None:
    while self.step():
      pass

  def start(self) -> None:
    """Runs the loop in a daemon thread until `shutdown`."""
    if self._thread is not None:
      raise RuntimeError("the engine is already running")
    self._thread = threading.Thread(target=self._loop, name="dspark-engine", daemon=True)
    self._thread.start()

  def shutdown(self, drain: bool = True, timeout: float | None = None) -> None:
    """Stops taking requests; with `drain`, lets queued and in-flight ones finish first."""
    self._closed = True
    if drain:
      deadline = None if timeout is None else time.monotonic() + timeout
      while self.pending and (deadline is None or time.monotonic() < deadline):
        if self._thread is None:
          self.step()
        else:
          time.sleep(0.01)
    self._stop.set()
    if self._thread is not None:
      self._thread.join(timeout)
      self._thread = None
    for handle in self._all_handles():  # whatever did not drain in time
      self._finish_cancelled(handle)

  def _loop(self) -> None:
    while not self._stop.is_set():
      try:
        if not self.step():
          try:  # idle: wait for a request instead of spinning
            self._waiting.append(self._inbox.get(timeout=0.05))
          except queue.Empty:
            pass
      except Exception as error:  # a failed tick fails its requests, never hangs them
        for handle in self._all_handles():
          handle._emit(Event([], "error", handle.metrics, f"{type(error).__name__}: {error}"))
        self._slots = [None] * self.num_slots
        self._waiting.clear()
        self.state = self._empty_state()

  # -- internals -------------------------------------------------------------------------------

  def _all_handles(self) -> list[RequestHandle]:
    handles = [h for h in self._slots if h is not None] + list(self._waiting)
    while True:
      try:
        handles.append(self._inbox.get_nowait())
      except queue.Empty:
        break
    self._slots = [None] * self.num_slots
    self._waiting.clear()
    return handles

  def _empty_state(self) -> SpecState:
    """B slots, every one done (each holds a one-token dummy prompt with a budget of 1)."""
    b = self.num_slots
    prompts = np.full((b, MIN_BUCKET), self.spec.pad_id, np.int32)
    return _prefill(
      self.target_params,
      self.draft_params,
      prompts,
      np.ones(b, np.int32),
      KVCache.create(self.target_config, b, self.capacity),
      np.zeros(b, np.int32),
      np.zeros(b, np.uint32),
      np.zeros(b, np.int32),
      **self._static,
      sampling=RowSampling.of([SamplingParams()] * b),
      max_tokens_B=np.ones(b, np.int32),
    )

  def _bucket(self, n: int) -> int:
    width = MIN_BUCKET
    while width < n:
      width *= 2
    return min(width, self.capacity)

  def _admit(self) -> None:
    admitted = False
    for slot in range(self.num_slots):
      if not self._waiting:
        break
      if self._slots[slot] is not None:
        continue
      handle = self._waiting.popleft()
      request = handle.request
      g = self.drafter.draft_len
      small = _prefill(
        self.target_params,
        self.draft_params,
        pad_prompts([list(request.prompt)], self._bucket(len(request.prompt)), self.spec.pad_id),
        np.asarray([len(request.prompt)], np.int32),
        KVCache.create(self.target_config, 1, self.capacity),
        np.zeros(1, np.int32),
        np.asarray([handle.seed], np.uint32),
        np.full(1, g, np.int32),
        **self._static,
        sampling=RowSampling.of([request.sampling]),
        max_tokens_B=np.asarray([request.max_tokens], np.int32),
      )
      self.state = insert_jit(self.state, small, jnp.int32(slot))
      self._slots[slot] = handle
      self._sent[slot] = 0
      admitted = True
    if admitted:  # the first tokens stream now: the time to first token waits for no round
      self._stream()

  def _drop_cancelled(self) -> None:
    kept = collections.deque()
    for handle in self._waiting:
      if handle.cancelled:
        self._finish_cancelled(handle)
      else:
        kept.append(handle)
    self._waiting = kept
    stale = [i for i, h in enumerate(self._slots) if h is not None and h.cancelled]
    if stale:
      self._mark_done(stale)
      for i in stale:
        self._finish_cancelled(self._slots[i])
        self._slots[i] = None

  def _finish_cancelled(self, handle: RequestHandle) -> None:
    handle.metrics.finished = time.perf_counter()
    handle._emit(Event([], "cancelled", handle.metrics))

  def _mark_done(self, slots: list[int]) -> None:
    done = self.state.done.at[np.asarray(slots)].set(True)
    self.state = self.state.replace(done=done)

  def _stream(self) -> None:
    busy = [i for i, h in enumerate(self._slots) if h is not None]
    if not busy:
      return
    tokens, counts, done = jax.device_get(
      (self.state.tokens, self.state.num_generated, self.state.done)
    )
    now = time.perf_counter()
    finished, host_stopped = [], []
    for i in busy:
      handle = self._slots[i]
      new = tokens[i, self._sent[i] : counts[i]].tolist()
      reason = None
      extra = handle.request.stop_ids
      hit = next((k for k, t in enumerate(new) if t in extra), None) if extra else None
      if hit is not None:
        new, reason = new[: hit + 1], "stop"
        host_stopped.append(i)
      elif done[i]:
        last = tokens[i, counts[i] - 1]
        reason = "stop" if last in self.spec.stop_ids else "length"
      self._sent[i] += len(new)
      if new and handle.metrics.first_token is None:
        handle.metrics.first_token = now
      handle.metrics.tokens += len(new)
      if reason is None:
        if new:
          handle._emit(Event(new))
      else:
        finished.append((i, new, reason))
    if host_stopped:
      self._mark_done(host_stopped)
    if finished:
      stats = jax.device_get(self.state.stats)
      for i, new, reason in finished:
        handle = self._slots[i]
        m = handle.metrics
        m.finished = now
        m.rounds = int(stats.rounds[i])
        m.committed = int(stats.committed[i])
        m.verified = int(stats.admitted[i].sum())
        m.drafted = int(stats.drafted[i])
        self._slots[i] = None
        handle._emit(Event(new, reason, m))
