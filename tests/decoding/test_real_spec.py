"""SmolLM2-135M with the n-gram drafter and the committed DSpark drafter: greedy speculative
output equals plain greedy output."""

import json
from pathlib import Path

import jax
import pytest

from dspark_jax.benchmarks import BENCHMARK_DIR
from dspark_jax.decoding.generate import GenerateConfig, generate
from dspark_jax.decoding.loop import SpecConfig, speculative_generate
from dspark_jax.drafters.ngram import NgramDrafter
from dspark_jax.io.deepspec import load_drafter
from dspark_jax.io.load import load_model

# Extended tier: greedy identity on the real model is also checked in the default suite by the
# CLI demo test and the server's eight-chat test; this one runs the benchmark prompts.
pytestmark = [pytest.mark.real_model, pytest.mark.slow, pytest.mark.extended]

ROOT = Path(__file__).resolve().parents[2]
EVAL = BENCHMARK_DIR
DSPARK = ROOT / "data" / "drafters" / "smollm2_135m_dspark"  # committed by issue 5


def eval_prompts(per_file: dict[str, int]) -> list[str]:
  prompts = []
  for name, count in per_file.items():
    path = EVAL / f"{name}.jsonl"
    if not path.is_file():
      pytest.skip(f"benchmark prompts not found at {path}")
    with open(path) as f:
      rows = [json.loads(line) for line in f if line.strip()]
    prompts += [row["turns"][0] for row in rows[:count]]
  return prompts


def test_greedy_speculative_output_equals_plain_on_benchmark_prompts():
  model = load_model("smollm2-135m")
  params = jax.device_put(model.params)
  tok = model.tokenizer
  texts = eval_prompts({"gsm8k": 2, "humaneval": 2, "mt-bench": 2})
  prompts = [tok.encode_chat([{"role": "user", "content": t}]) for t in texts]
  assert len(prompts) == 6
  # One batch of rows of different lengths: one compile per loop instead of one per batch.
  plain = generate(params, model.config, prompts, GenerateConfig(32, stop_ids=tok.stop_ids))
  drafters = {
    "ngram": (NgramDrafter(4, model.config.vocab_size), None),
    "dspark": load_drafter(DSPARK, model.config, params),
  }
  for name, (drafter, draft_params) in drafters.items():
    spec = speculative_generate(
      params, model.config, drafter, draft_params, prompts, SpecConfig(32, stop_ids=tok.stop_ids)
    )
    assert spec.tokens == plain.tokens, name
    # The drafter must actually have been used: more than one token per round on average.
    assert spec.committed.sum() / spec.rounds.sum() > 1.0, name
