"""The evaluation harness: prompt selection, pooling over batches, macro averages, result files."""

import csv
import json

import numpy as np
import pytest

from dspark_jax.data.prompts import domain_of
from dspark_jax.decoding.loop import SpecConfig, speculative_generate
from dspark_jax.decoding.sampling import SamplingParams
from dspark_jax.drafters.draft_model import DraftModelDrafter
from dspark_jax.eval import harness
from dspark_jax.eval.acceptance import metrics_of
from tests.tiny import tiny_model


def test_selection_is_a_seeded_shuffle_per_benchmark():
  items = list(range(100))
  a = harness.select(items, 10, 0, "gsm8k")
  assert a == harness.select(items, 10, 0, "gsm8k") and len(set(a)) == 10
  assert a != harness.select(items, 10, 1, "gsm8k") and a != harness.select(items, 10, 0, "mbpp")
  assert sorted(harness.select(items, None, 0, "gsm8k")) == items
  assert harness.select(items, 500, 0, "gsm8k")[:10] == a  # a larger cap extends the same order


def test_benchmark_metrics_pool_every_batch_like_one_run():
  """Batches of 2 give the counts of one batch holding every prompt (per-prompt sampling keys)."""
  config, params = tiny_model("llama", scale=3.0)
  small, small_params = tiny_model("llama", seed=7, scale=3.0, num_layers=1)
  drafter = DraftModelDrafter(small, 3)
  prompts = [[5, 9, 2, 33], [11, 4], [8, 8, 8, 20, 3], [1, 2, 3], [40, 41]]
  settings = harness.EvalSettings(temperature=1.0, max_new_tokens=12, batch_size=2, seed=5)
  got = harness.run_benchmark(params, config, drafter, small_params, prompts, settings, rounds=True)
  one = speculative_generate(
    params, config, drafter, small_params, prompts, SpecConfig(12, SamplingParams(1.0)), seed=5
  )
  want = metrics_of(one)
  assert got["rounds"] == want["rounds"] and got["new_tokens"] == one.num_tokens
  for key in ("tau", "verify_rate", "prefix_survival", "conditional_acceptance"):
    np.testing.assert_allclose(got[key], want[key], rtol=1e-12)
  assert got["prompts"] == 5
  conf, accepted = got["rounds_trace"]  # every round verified all 3 slots: they sum to the stats
  assert len(accepted) == got["rounds"] and conf.shape == (got["rounds"], 3)
  np.testing.assert_array_equal(
    (np.arange(3)[None] < accepted[:, None]).sum(0), one.accepted.sum(0)
  )


def row(tau, survival):
  return {
    "tau": tau,
    "verify_rate": tau / 2,
    "prefix_survival": survival,
    "prompts": 3,
    "conditional_acceptance": survival,
  }


def test_domains_are_macro_averages_and_results_are_written(tmp_path):
  per = {
    "gsm8k": row(3.0, [0.8, 0.4]),
    "math500": row(2.0, [0.6, 0.2]),
    "humaneval": row(4.0, [0.9, 0.7]),
  }
  domains = harness.macro_averages(per, domain_of)
  assert domains["math"]["tau"] == 2.5 and domains["math"]["benchmarks"] == 2
  np.testing.assert_allclose(domains["math"]["prefix_survival"], [0.7, 0.3])
  assert domains["code"]["tau"] == 4.0
  assert domains["all"]["tau"] == 3.25  # over domains, not over benchmarks (which gives 3.0)
  record = {"benchmarks": per, "domains": domains}
  harness.write_results(tmp_path, record)
  assert json.loads((tmp_path / "eval.json").read_text()) == record
  with open(tmp_path / "eval.csv") as f:
    lines = list(csv.DictReader(f))
  assert [(r["kind"], r["name"]) for r in lines][:3] == [
    ("benchmark", "gsm8k"),
    ("benchmark", "math500"),
    ("benchmark", "humaneval"),
  ]
  assert float(lines[-1]["tau"]) == 3.25 and float(lines[0]["survival_2"]) == 0.4
  assert "| **all** (macro) | | 3.250 |" in harness.table(record)


def test_undefined_conditional_acceptance_is_left_out_of_averages_and_shown_as_missing(tmp_path):
  per = {"gsm8k": row(1.5, [0.5, 0.1]), "math500": row(1.2, [0.2, 0.0])}
  per["gsm8k"]["conditional_acceptance"] = [0.5, 0.2]
  per["math500"]["conditional_acceptance"] = [0.2, None]  # slot 2 never reached
  domains = harness.macro_averages(per, domain_of)
  np.testing.assert_allclose(domains["math"]["conditional_acceptance"], [0.35, 0.2])
  per["math500"]["conditional_acceptance"] = [None, None]
  per["gsm8k"]["conditional_acceptance"] = [0.5, None]
  domains = harness.macro_averages(per, domain_of)
  assert domains["math"]["conditional_acceptance"] == [0.5, None]
  record = {"benchmarks": per, "domains": domains}
  harness.write_results(tmp_path, record)
  assert json.loads((tmp_path / "eval.json").read_text()) == record
  with open(tmp_path / "eval.csv") as f:
    lines = list(csv.DictReader(f))
  assert lines[1]["conditional_1"] == "" and lines[0]["conditional_2"] == ""
  assert "n/a / n/a" in harness.table(record)


@pytest.mark.parametrize("value", [float("inf"), float("nan"), -1.0])
def test_eval_settings_refuse_a_non_finite_or_negative_temperature(value):
  from dspark_jax.eval.harness import EvalSettings

  with pytest.raises(ValueError, match="temperature must be >= 0 and finite"):
    EvalSettings(temperature=value)
