"""SmolLM2-135M with the n-gram drafter: greedy speculative output equals plain greedy output."""

import json
from pathlib import Path

import jax
import pytest

from dspark_jax.decoding.generate import GenerateConfig, generate
from dspark_jax.decoding.loop import SpecConfig, speculative_generate
from dspark_jax.drafters.ngram import NgramDrafter
from dspark_jax.io.load import load_model

pytestmark = [pytest.mark.real_model, pytest.mark.slow]

EVAL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "eval"


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


def test_ngram_greedy_equals_plain_on_20_benchmark_prompts():
  model = load_model("smollm2-135m")
  params = jax.device_put(model.params)
  tok = model.tokenizer
  texts = eval_prompts({"gsm8k": 7, "humaneval": 7, "mt-bench": 6})
  prompts = [tok.encode_chat([{"role": "user", "content": t}]) for t in texts]
  assert len(prompts) == 20
  drafter = NgramDrafter(4, model.config.vocab_size)
  # One batch of 20 rows of different lengths: one compile per loop instead of one per batch.
  plain = generate(params, model.config, prompts, GenerateConfig(48, stop_ids=tok.stop_ids))
  spec = speculative_generate(
    params, model.config, drafter, None, prompts, SpecConfig(48, stop_ids=tok.stop_ids)
  )
  assert spec.tokens == plain.tokens
  # The drafter must actually have been used: more than one token per round on average.
  assert spec.committed.sum() / spec.rounds.sum() > 1.0
