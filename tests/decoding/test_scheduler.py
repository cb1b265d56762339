"""Verification schedules: policies against plain-Python references, the Appendix A example,
and losslessness of the scheduled decode loop (greedy identity, output distribution)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dspark_jax.decoding import scheduler
from dspark_jax.decoding.generate import GenerateConfig, generate
from dspark_jax.decoding.loop import SpecConfig, speculative_generate
from dspark_jax.decoding.sampling import SamplingParams
from dspark_jax.decoding.verify import verify
from tests.distribution import chi2_quantile_1e3, chi_square, exact_sequence_probs, tight_cache
from tests.tiny import tiny_model
from tests.tiny_drafters import random_drafter

COST = scheduler.CostTable((1, 2, 3, 4, 5), (1.0, 1.15, 1.3, 1.5, 1.8), 0.2)


def _seconds(cost, w):
  return cost.propose_seconds + float(cost.seconds_of_width(np.int32(w)))


def reference_levels(conf, cap, active, cost):
  """Planned throughput of verifying slots 1..L of every row, L = 0..G, in plain Python."""
  b, g = conf.shape
  a = np.cumprod(np.clip(conf, 0, 1), axis=1)
  thetas = []
  for level in range(g + 1):
    tau = sum(1 + sum(a[r, j] for j in range(min(level, cap[r]))) for r in range(b) if active[r])
    thetas.append(tau / _seconds(cost, level + 1))
  return thetas


def reference_alg1(conf, cap, active, cost):
  """Algorithm 1 over slot levels, as its docstring states it: stop at the first drop."""
  thetas = reference_levels(conf, cap, active, cost)
  level = 0
  while level + 1 < len(thetas) and thetas[level + 1] > thetas[level]:
    level += 1
  return np.where(active, np.minimum(cap, level), 0), thetas[level]


def _random_case(rng, b, g):
  conf = rng.uniform(0.2, 1.0, (b, g)).astype(np.float32)
  cap = rng.integers(0, g + 1, b).astype(np.int32)
  active = rng.random(b) < 0.8
  return conf, cap, active


@pytest.mark.parametrize("seed", range(6))
def test_algorithm1_equals_the_reference(seed):
  rng = np.random.default_rng(seed)
  conf, cap, active = _random_case(rng, 5, 4)
  got, theta = scheduler.Algorithm1(COST).lengths(
    jnp.asarray(conf), jnp.asarray(cap), jnp.asarray(active), scheduler.initial_state(5, 4)
  )
  want, want_theta = reference_alg1(conf, cap, active, COST)
  np.testing.assert_array_equal(got, want)
  np.testing.assert_allclose(theta, want_theta, rtol=1e-5)


def test_async_admits_the_top_budget_of_the_current_round():
  rng = np.random.default_rng(3)
  b, g = 4, 4
  old, cap, active = _random_case(rng, b, g)
  state = scheduler.initial_state(b, g)
  state = state.replace(history=state.history.at[0].set(scheduler.survival(jnp.asarray(old))))
  # The budget: the best level of the old round, searched without early stop, in candidates.
  level = int(np.argmax(reference_levels(old, cap, active, COST)))
  budget = int(sum(min(level, cap[r]) for r in range(b) if active[r]))
  conf = rng.uniform(0.2, 1.0, (b, g)).astype(np.float32)
  got, _ = scheduler.Async(COST).lengths(
    jnp.asarray(conf), jnp.asarray(cap), jnp.asarray(active), state
  )
  a = np.cumprod(conf, axis=1)
  cands = sorted(
    (-a[r, j], r * g + j, r) for r in range(b) for j in range(g) if active[r] and j < cap[r]
  )
  want = np.bincount([r for _, _, r in cands[:budget]], minlength=b)
  np.testing.assert_array_equal(got, want)
  assert got.sum() == budget


def test_threshold_and_fixed():
  conf = jnp.array([[0.9, 0.8, 0.95, 0.2], [0.5, 0.9, 0.9, 0.9]])
  cap = jnp.array([4, 3])
  on = jnp.array([True, True])
  st = scheduler.initial_state(2, 4)
  np.testing.assert_array_equal(scheduler.Threshold(0.75).lengths(conf, cap, on, st)[0], [3, 0])
  np.testing.assert_array_equal(
    scheduler.Threshold(0.7, cumulative=True).lengths(conf, cap, on, st)[0], [2, 0]
  )
  np.testing.assert_array_equal(
    scheduler.Fixed(2).lengths(conf, cap, jnp.array([True, False]), st)[0], [2, 0]
  )


# --- the paper's Appendix A: searching past the first drop is not lossless ------------------


@dataclasses.dataclass(frozen=True)
class Retrospective:
  """A deliberately anticipating schedule: Algorithm 1 without its early stop, searching every
  level of the round (so a later slot's confidence, which depends on the earlier draft,
  decides whether the earlier draft is verified)."""

  cost: scheduler.CostTable
  gated = False

  def lengths(self, confidence_BxG, cap_B, active_B, state):
    theta = scheduler._level_throughput(
      scheduler.survival(confidence_BxG), cap_B, active_B, self.cost
    )
    level = jnp.argmax(theta)
    return jnp.where(active_B, jnp.minimum(cap_B, level), 0), theta[level]


def _appendix_a(policy, n=20_000):
  """Two tokens {A, B}; the target wants (0.7, 0.3), the draft is uniform; slot 2's confidence
  is 0.9 after drafting A and 0.1 after B. Returns the frequency of each first token."""
  rng = np.random.default_rng(0)
  x1 = rng.integers(0, 2, n).astype(np.int32)
  drafts = np.stack([x1, np.zeros(n, np.int32)], 1)
  conf = np.stack([np.full(n, 0.5), np.where(x1 == 0, 0.9, 0.1)], 1).astype(np.float32)
  cost = scheduler.CostTable((1, 2, 3), (1.0, 1.6, 1.7), 0.0)
  p = policy(cost)

  def one_request(conf_G):  # one request per round: the schedule sees only its own row
    got, _ = p.lengths(
      conf_G[None], jnp.array([2]), jnp.array([True]), scheduler.initial_state(1, 2)
    )
    return got[0]

  lengths = np.asarray(jax.jit(jax.vmap(one_request))(jnp.asarray(conf)))
  target = jnp.log(jnp.array([0.7, 0.3]))[None, None].repeat(n, 0).repeat(3, 1)
  draft = jnp.zeros((n, 2, 2))
  accepted, next_token = verify(
    target,
    jnp.asarray(drafts),
    draft,
    jnp.asarray(lengths, jnp.int32),
    SamplingParams(1.0),
    jnp.uint32(7),
    jnp.arange(n, dtype=jnp.uint32),
    jnp.zeros(n, jnp.int32),
  )
  first = np.where(np.asarray(accepted) > 0, drafts[:, 0], np.asarray(next_token))
  return np.bincount(first, minlength=2) / n, np.asarray(lengths)


@pytest.mark.slow
def test_appendix_a_retrospective_search_biases_the_output_and_algorithm1_does_not():
  freq, lengths = _appendix_a(Retrospective)
  assert set(lengths) == {0, 2}  # verifies exactly when slot 2 looks good, i.e. after A
  np.testing.assert_allclose(freq, [0.85, 0.15], atol=0.015)
  freq, lengths = _appendix_a(scheduler.Algorithm1)
  assert set(lengths) == {0}  # the first candidate lowers the planned throughput: stop
  np.testing.assert_allclose(freq, [0.7, 0.3], atol=0.015)


# --- the scheduled decode loop -------------------------------------------------------------

PROMPTS = [[5, 9, 2, 33, 7, 1, 60, 5, 9, 2], [11, 4], [8, 8, 8, 20, 3, 8, 8], [1, 2, 3, 1, 2]]
# G = 2 (widths 1, 2, 3): every policy still chooses among several widths, and each loop
# compiles 3 forwards instead of 4.
SMALL = {"num_layers": 1, "target_layer_ids": (-1, 0), "block_size": 3}
POLICIES = [
  scheduler.Fixed(1),
  scheduler.Threshold(0.4),
  scheduler.Threshold(0.3, cumulative=True),
  scheduler.Algorithm1(COST),
  scheduler.Async(COST),
]


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: type(p).__name__)
def test_greedy_output_equals_plain_at_batch_1_and_8(policy):
  config, params = tiny_model("llama", scale=5.0)
  drafter, dparams = random_drafter("dspark-markov", config, params, **SMALL)
  prompts8 = PROMPTS + [p[::-1] + [3] for p in PROMPTS]
  for prompts in (prompts8[:1], prompts8):
    plain = generate(params, config, prompts, GenerateConfig(20, stop_ids=(7,))).tokens
    got = speculative_generate(
      params, config, drafter, dparams, prompts, SpecConfig(20, stop_ids=(7,)), schedule=policy
    )
    assert got.tokens == plain


def test_a_gated_policy_skips_drafting_when_it_does_not_pay():
  """With a proposal as costly as 3 plain steps, Algorithm 1 plans less than a plain step's
  throughput and falls back to plain rounds (probing with growing gaps); output unchanged."""
  config, params = tiny_model("llama", scale=5.0)
  drafter, dparams = random_drafter("dspark-markov", config, params, **SMALL)
  costly = scheduler.CostTable((1, 2, 3, 4, 5), (1.0, 1.1, 1.2, 1.3, 1.4), 3.0)
  plain = generate(params, config, PROMPTS, GenerateConfig(40)).tokens
  got = speculative_generate(
    params, config, drafter, dparams, PROMPTS, SpecConfig(40), schedule=scheduler.Algorithm1(costly)
  )
  assert got.tokens == plain
  assert 0 < got.drafted_share < 0.3
  cheap = speculative_generate(
    params, config, drafter, dparams, PROMPTS, SpecConfig(40), schedule=scheduler.Algorithm1(COST)
  )
  assert cheap.drafted_share > got.drafted_share


@dataclasses.dataclass(frozen=True)
class Anticipating:
  """Deliberately wrong: slot j is verified only if slot j + 1's confidence, which depends on
  draft j, is high."""

  gated = False

  def lengths(self, confidence_BxG, cap_B, active_B, state):
    c = confidence_BxG
    nxt = jnp.pad(c[:, 1:], ((0, 0), (0, 1)), constant_values=1.0)
    keep = jnp.cumprod(nxt >= jnp.median(c), axis=1).sum(1).astype(jnp.int32)
    return jnp.where(active_B, jnp.minimum(keep, cap_B), 0), None


@pytest.mark.slow
@pytest.mark.parametrize(
  "policy",
  [scheduler.Threshold(0.5), scheduler.Algorithm1(COST), scheduler.Async(COST), Anticipating()],
  ids=lambda p: type(p).__name__,
)
def test_output_distribution_is_the_target_distribution(policy):
  """First 3 tokens of 2 ragged prompts x 6,000 rows in one batch (the schedule couples every
  row), against exact enumeration; the anticipating policy must fail."""
  vocab = 6
  config, params = tiny_model("llama", scale=3.0, vocab_size=vocab)
  drafter, dparams = random_drafter(
    "dspark-markov", config, params, seed=3, mask_token_id=5, **SMALL
  )
  # A confidence head that reacts strongly to the previous draft (W1[x]).
  dparams["trainable"]["markov_head"]["markov_w1"] = (
    dparams["trainable"]["markov_head"]["markov_w1"] * 8
  )
  sampling = SamplingParams(0.8, top_k=5)
  prompts = [[1, 2, 3, 1], [4, 0]]
  n = 6_000
  out = speculative_generate(
    params,
    config,
    drafter,
    dparams,
    prompts * n,
    SpecConfig(3, sampling),
    seed=4,
    schedule=policy,
    cache_capacity=tight_cache(prompts, 3, drafter),
  )
  fails = []
  for i, prompt in enumerate(prompts):
    exact = exact_sequence_probs(config, params, prompt, 3, sampling)
    stat, dof = chi_square([tuple(t) for t in out.tokens[i :: len(prompts)]], exact)
    fails.append(stat >= chi2_quantile_1e3(dof))
  assert any(fails) == isinstance(policy, Anticipating), fails
  assert out.admitted.sum() > 0


def test_one_compile_per_policy_and_shape():
  """Prompts of new lengths and contents reuse the compiled loop; a new policy compiles once."""
  from dspark_jax.decoding import generate as gen_module
  from dspark_jax.decoding import loop

  config, params = tiny_model("llama", scale=5.0)
  drafter, dparams = random_drafter("dspark-markov", config, params, **SMALL)
  spec = SpecConfig(8)
  run = lambda prompts, policy: speculative_generate(
    params, config, drafter, dparams, prompts, spec, cache_capacity=64, schedule=policy
  )
  loops = lambda: sum(key[0] is loop._decode_jit for key in gen_module._COMPILED)
  run(PROMPTS[:2], scheduler.Algorithm1(COST))
  size = loops()
  run(PROMPTS[2:], scheduler.Algorithm1(COST))  # an equal policy, other prompts: no compile
  assert loops() == size
  run(PROMPTS[:2], scheduler.Async(COST))
  assert loops() == size + 1


def test_fixed_zero_is_plain_decoding():
  config, params = tiny_model("llama", scale=5.0)
  drafter, dparams = random_drafter("dspark-markov", config, params, **SMALL)
  plain = generate(params, config, PROMPTS, GenerateConfig(12)).tokens
  got = speculative_generate(
    params, config, drafter, dparams, PROMPTS, SpecConfig(12), schedule=scheduler.Fixed(0)
  )
  assert got.tokens == plain
  assert got.admitted.sum() == 0 and got.mean_accepted_length == 1.0
