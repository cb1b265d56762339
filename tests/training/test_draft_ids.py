"""The draft vocabulary a training run chooses: training answers, or a larger counted corpus."""

import json
from types import SimpleNamespace

import numpy as np

from dspark_jax.cli.train import _draft_ids
from dspark_jax.data.target_cache import Sample


def fake(n, vocab=50, stop=(49,)):
  drafter = SimpleNamespace(config=SimpleNamespace(draft_vocab_size=n))
  model = SimpleNamespace(
    config=SimpleNamespace(vocab_size=vocab), tokenizer=SimpleNamespace(stop_ids=list(stop))
  )
  return drafter, model


def test_ids_come_from_the_training_answers_or_from_the_source_files(tmp_path):
  samples = [Sample((1, 2, 3, 3, 3, 4), (0, 0, 1, 1, 1, 1)), Sample((5, 6, 6), (0, 1, 1))]
  drafter, model = fake(3)
  assert _draft_ids(fake(0)[0], model, samples=samples) is None
  # Counted over the answers (3 three times, 6 twice, 4 once), the stop token 49 always in.
  np.testing.assert_array_equal(_draft_ids(drafter, model, samples=samples), [3, 6, 49])
  source = tmp_path / "more.jsonl"
  rows = [
    {"index": 0, "response_ids": [7, 7, 8], "finish": "stop"},
    {"index": 1, "response_ids": [9, 9, 9, 9], "finish": "error"},  # errors are not counted
  ]
  source.write_text("".join(json.dumps(r) + "\n" for r in rows))
  np.testing.assert_array_equal(
    _draft_ids(drafter, model, str(source), samples=samples), [7, 8, 49]
  )
