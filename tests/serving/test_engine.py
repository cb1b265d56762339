"""The serving engine against the reference loop: each request's output equals what
`speculative_generate` gives for it alone, whatever arrives beside it and whenever."""

import threading

import pytest

from dspark_jax.decoding import scheduler
from dspark_jax.decoding.generate import GenerateConfig, generate
from dspark_jax.decoding.loop import SpecConfig, speculative_generate
from dspark_jax.decoding.sampling import SamplingParams
from dspark_jax.serving.engine import Engine, EngineClosed, Request
from dspark_jax.serving.slots import batch_axis
from tests.decoding.test_loop import PROMPTS, drafters
from tests.tiny import tiny_model
from tests.tiny_drafters import random_drafter

STOP = (7,)
# (sampling, seed): greedy, plain sampling, top-k, top-p; None = a fresh seed.
MIXED = [
  (SamplingParams(), None),
  (SamplingParams(1.0), 3),
  (SamplingParams(0.8, top_k=5), 4),
  (SamplingParams(1.0, top_p=0.9), 5),
  (SamplingParams(), 6),
]


def requests():
  prompts = PROMPTS + [p[::-1] + [3] for p in PROMPTS]
  return [
    Request(tuple(prompts[i]), (12, 20)[i % 2], sampling, seed)
    for i, (sampling, seed) in enumerate(MIXED)
  ]


def alone(config, params, drafter, dparams, request, seed, schedule=None):
  spec = SpecConfig(request.max_tokens, request.sampling, stop_ids=STOP)
  return speculative_generate(
    params, config, drafter, dparams, [list(request.prompt)], spec, seed=seed, schedule=schedule
  ).tokens[0]


def serve_staggered(engine, reqs):
  """Submits one request per tick (so they arrive while others decode), runs to the end."""
  handles = []
  for request in reqs:
    handles.append(engine.submit(request))
    engine.step()
  engine.run_until_idle()
  return handles


def test_each_request_equals_its_reference_alone():
  """An independent draft model (sampled drafts); the n-gram drafter's requests are checked the
  same way by the threaded test below."""
  config, params = tiny_model("llama", scale=3.0)
  _, drafter, dparams = drafters(config, params)[1]
  engine = Engine(
    params, config, drafter, dparams, slots=3, max_context=96, max_tokens=32, stop_ids=STOP
  )
  reqs = requests()
  handles = serve_staggered(engine, reqs)
  for request, handle in zip(reqs, handles, strict=True):
    tokens, reason, metrics = handle.result(timeout=5)
    assert tokens == alone(config, params, drafter, dparams, request, handle.seed)
    assert reason == ("stop" if tokens[-1] in STOP else "length")
    assert metrics.tokens == len(tokens) and metrics.rounds >= 1
    assert metrics.time_to_first_token is not None
  assert engine.busy_slots == 0 and engine.pending == 0  # no slot leaked


def test_greedy_requests_equal_plain_decoding_under_algorithm_1_and_plain():
  """Schedules that couple rows (Algorithm 1 plans over the batch) keep greedy output exact;
  Fixed(0) is plain decoding in the engine."""
  config, params = tiny_model("llama", scale=5.0)
  drafter, dparams = random_drafter(
    "dspark-markov", config, params, num_layers=1, target_layer_ids=(-1, 0), block_size=3
  )
  cost = scheduler.CostTable((1, 2, 3, 4, 5), (1.0, 1.1, 1.2, 1.3, 1.4), 0.1)
  reqs = [r for r in requests() if r.sampling.greedy] * 3
  for schedule in (scheduler.Algorithm1(cost), scheduler.Fixed(0)):
    engine = Engine(
      params,
      config,
      drafter,
      dparams,
      slots=2,
      max_context=96,
      max_tokens=32,
      stop_ids=STOP,
      schedule=schedule,
    )
    for request, handle in zip(reqs, serve_staggered(engine, reqs), strict=True):
      want = generate(
        params, config, [list(request.prompt)], GenerateConfig(request.max_tokens, stop_ids=STOP)
      ).tokens[0]
      assert handle.result(timeout=5)[0] == want


class SharedSeedEngine(Engine):
  """A deliberately wrong engine: every request drawn with one seed, keyed by its slot."""

  def submit(self, request, on_event=None):
    handle = super().submit(request, on_event)
    handle.seed = 0
    return handle


def test_the_identity_test_fails_an_engine_that_ignores_request_seeds():
  config, params = tiny_model("llama", scale=3.0)
  _, drafter, dparams = drafters(config, params)[1]
  engine = SharedSeedEngine(
    params, config, drafter, dparams, slots=3, max_context=96, max_tokens=32, stop_ids=STOP
  )
  reqs = [r for r in requests() if not r.sampling.greedy]
  handles = serve_staggered(engine, reqs)
  same = [
    h.result(timeout=5)[0] == alone(config, params, drafter, dparams, r, r.seed)
    for r, h in zip(reqs, handles, strict=True)
  ]
  assert not all(same)


def test_cancel_frees_the_slot_and_request_stop_ids_end_a_request():
  config, params = tiny_model("llama", scale=3.0)
  _, drafter, dparams = drafters(config, params)[1]
  engine = Engine(
    params, config, drafter, dparams, slots=1, max_context=96, max_tokens=32, stop_ids=STOP
  )
  long = Request(tuple(PROMPTS[0]), 30, SamplingParams(1.0), seed=1)
  first = engine.submit(long)
  queued = engine.submit(long)
  engine.step()
  first.cancel()
  queued.cancel()
  engine.run_until_idle()
  assert first.result(timeout=5)[1] == "cancelled" and queued.result(timeout=5)[1] == "cancelled"
  assert engine.busy_slots == 0
  # A host-side stop id: the output is the reference's, cut just after its first occurrence.
  want = alone(config, params, drafter, dparams, long, 1)
  stop = want[5]
  handle = engine.submit(Request(long.prompt, 30, long.sampling, 1, stop_ids=(stop,)))
  engine.run_until_idle()
  tokens, reason, _ = handle.result(timeout=5)
  assert tokens == want[: want.index(stop) + 1] and reason == "stop"


def test_threaded_engine_serves_concurrent_submitters_and_drains_on_shutdown():
  config, params = tiny_model("llama", scale=3.0)
  _, drafter, dparams = drafters(config, params)[0]
  engine = Engine(
    params, config, drafter, dparams, slots=2, max_context=96, max_tokens=32, stop_ids=STOP
  )
  engine.start()
  reqs = requests()
  handles = [None] * len(reqs)

  def client(i):
    handles[i] = engine.submit(reqs[i])

  threads = [threading.Thread(target=client, args=(i,)) for i in range(len(reqs))]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  engine.shutdown(drain=True, timeout=60)
  for request, handle in zip(reqs, handles, strict=True):
    assert handle.finished.is_set()
    assert handle.result(timeout=1)[0] == alone(config, params, drafter, None, request, handle.seed)
  with pytest.raises(EngineClosed):
    engine.submit(reqs[0])


def test_bad_requests_are_refused_before_they_are_queued():
  config, params = tiny_model("llama", scale=3.0)
  _, drafter, dparams = drafters(config, params)[0]
  engine = Engine(params, config, drafter, dparams, slots=2, max_context=64, max_tokens=32)
  for request, message in [
    (Request((), 4), "empty"),
    (Request((1, 2), 0), "max_tokens must be in"),
    (Request((1, 2), 33), "max_tokens must be in"),
    (Request((1,) * 40, 30), "exceeds the context"),
    (Request((1, 10_000), 4), "token ids must be in"),
    (Request((1, 2), 4, seed=-1), "seed must be in"),
  ]:
    with pytest.raises(ValueError, match=message):
      engine.submit(request)
  assert engine.pending == 0


def test_batch_axis_is_read_off_the_shapes():
  assert batch_axis((4, 7), (1, 7), 4) == 0
  assert batch_axis((2, 4, 3), (2, 1, 3), 4) == 1
  assert batch_axis((), (), 4) is None
  with pytest.raises(ValueError, match="no single batch axis"):
    batch_axis((4, 4), (1, 1), 4)
