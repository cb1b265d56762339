"""Acceptance metrics: hand-computed counts, and tau on rollouts whose rounds are known exactly."""

import math

import numpy as np
import pytest

from dspark_jax.decoding.generate import GenerateConfig, generate
from dspark_jax.decoding.loop import SpecConfig, speculative_generate
from dspark_jax.drafters.draft_model import DraftModelDrafter
from dspark_jax.eval.acceptance import acceptance_metrics, metrics_of
from tests.tiny import tiny_model


def test_prefix_survival_and_conditional_acceptance_by_hand():
  # 10 rounds, full proposals: slot 1 accepted 6 times, slots 1-2 three times, 1-3 once.
  m = acceptance_metrics(10, 25, 24, [10, 10, 10], [6, 3, 1], [10, 6, 3])
  assert m["tau"] == 2.5 and m["committed_per_round"] == 2.4 and m["verify_rate"] == 0.8
  np.testing.assert_allclose(m["prefix_survival"], [0.6, 0.3, 0.1])
  np.testing.assert_allclose(m["conditional_acceptance"], [0.6, 0.5, 1 / 3])
  # Shorter verifications: slot 2 verified in 5 rounds, 4 of them after slot 1 was accepted.
  m = acceptance_metrics(
    10, 20, 19, [[6, 3, 1], [4, 2, 1]], [[4, 2, 1], [2, 1, 0]], [[6, 2, 1], [4, 2, 1]]
  )
  np.testing.assert_allclose(m["prefix_survival"], [0.6, 0.3, 0.1])
  np.testing.assert_allclose(m["conditional_acceptance"], [0.6, 0.75, 0.5])


def test_a_slot_no_round_reached_has_no_conditional_acceptance():
  # 4 rounds, slot 1 never accepted: slots 2 and 3 were never reached (undefined, not 0).
  m = acceptance_metrics(4, 4, 4, [4, 4, 4], [0, 0, 0], [4, 0, 0])
  assert m["conditional_acceptance"] == [0.0, None, None]
  assert m["reached"] == [4, 0, 0]
  assert m["prefix_survival"] == [0.0, 0.0, 0.0]


def test_inconsistent_counts_are_refused():
  with pytest.raises(ValueError, match="accepted <= reached"):
    acceptance_metrics(10, 20, 20, [10, 10], [3, 5], [10, 3])  # accepted grows over slots
  with pytest.raises(ValueError, match="accepted <= reached"):
    acceptance_metrics(10, 20, 20, [10, 4], [6, 5], [10, 4])  # more accepted than reached


def test_tau_counts_only_accepted_tokens_in_the_round_that_reaches_eos():
  """The target drafting for itself (greedy): every verified draft is accepted, so each round
  commits G + 1 = 6 tokens until the budget or EOS, and the counts follow from the plain output."""
  config, params = tiny_model("llama", scale=5.0)
  prompts = [[5, 9, 2, 33, 7, 1, 60, 5, 9, 2], [11, 4], [8, 8, 8, 20, 3, 8, 8], [1, 2, 3, 1, 2]]
  budget, g = 26, 5
  free = generate(params, config, prompts, GenerateConfig(budget)).tokens
  # A stop token that first appears a few tokens into some row while another row never emits it.
  stop = next(
    t
    for row in free
    for i, t in enumerate(row)
    if i >= 3 and row.index(t) == i and any(t not in r for r in free)
  )
  plain = generate(params, config, prompts, GenerateConfig(budget, stop_ids=(stop,))).tokens
  got = speculative_generate(
    params,
    config,
    DraftModelDrafter(config, g),
    params,
    prompts,
    SpecConfig(budget, stop_ids=(stop,)),
  )
  assert got.tokens == plain
  want_rounds, want_counted, ends = [], [], []
  for row in plain:
    by_rounds = len(row) - 1  # the prefill makes the first token
    rounds = math.ceil(by_rounds / (g + 1))
    ends.append(row[-1] == stop)
    if row[-1] == stop:  # the last round's tokens end at EOS: count its accepted drafts only
      last = by_rounds - (g + 1) * (rounds - 1)
      want_counted.append((g + 1) * (rounds - 1) + min(last, g))
    else:  # budget rows: every round counts its drafts and bonus, the cut one included
      want_counted.append((g + 1) * rounds)
    want_rounds.append(rounds)
  assert any(ends) and not all(ends)
  np.testing.assert_array_equal(got.rounds, want_rounds)
  np.testing.assert_array_equal(got.counted, want_counted)
  np.testing.assert_array_equal(got.committed, [len(r) - 1 for r in plain])
  np.testing.assert_array_equal(got.accepted, got.admitted)
  np.testing.assert_array_equal(got.reached, got.admitted)
  m = metrics_of(got)
  assert m["tau"] == pytest.approx(sum(want_counted) / sum(want_rounds))
  assert m["tau"] < g + 1  # the EOS round lowers it below the all-bonus value
  assert m["conditional_acceptance"] == [1.0] * g
