"""Rows from a dataset's own answers: the chat template's rendering, cut like regeneration's."""

import json

import pytest

from dspark_jax.data import dataset_answers as da
from dspark_jax.data.prompts import load_sharegpt
from dspark_jax.data.regenerate import read_regenerated
from dspark_jax.data.target_cache import samples_from_regenerated
from dspark_jax.io.gguf_file import read_gguf
from dspark_jax.io.model_files import smollm2_135m_gguf
from dspark_jax.io.tokenizer import from_gguf_metadata

RECORDS = [
  {
    "id": "a",
    "conversations": [
      {"from": "human", "value": "Hi there"},
      {"from": "gpt", "value": "Hello! How can I help?"},
    ],
  },
  {
    "id": "b",
    "conversations": [
      {"from": "system", "value": "Be brief."},
      {"from": "human", "value": "Name a colour."},
      {"from": "gpt", "value": "Blue " * 40},
    ],
  },
  {"id": "c", "conversations": [{"from": "human", "value": "No answer here"}]},
  {
    "id": "d",
    "conversations": [{"from": "human", "value": "Empty answer"}, {"from": "gpt", "value": "  "}],
  },
  {
    "id": "e",
    "conversations": [{"from": "gpt", "value": "I speak first"}, {"from": "human", "value": "ok"}],
  },
]


def test_first_answer_follows_the_first_user_turn():
  assert da.first_answer(RECORDS[0]) == "Hello! How can I help?"
  assert da.first_answer(RECORDS[1]).startswith("Blue")
  assert [da.first_answer(r) for r in RECORDS[2:]] == [None, None, None]


def test_answer_ids_are_the_rendering_after_the_prompt_up_to_the_stop():
  assert da.answer_ids([1, 2], [1, 2, 5, 6, 9, 3], stop_ids=[9]) == [5, 6, 9]
  assert da.answer_ids([1, 2], [1, 7, 5, 9], stop_ids=[9]) is None  # the prefix moved
  assert da.answer_ids([1, 2], [1, 2, 5, 6], stop_ids=[9]) is None  # no stop token


@pytest.fixture(scope="module")
def tokenizer():
  return from_gguf_metadata(read_gguf(smollm2_135m_gguf()).metadata)


def test_rows_render_like_the_chat_template_and_train(tmp_path, tokenizer):
  path = tmp_path / "sharegpt.json"
  path.write_text(
    json.dumps(RECORDS)[:-1] + ', {"id": "cut", "conver'
  )  # truncated like the package
  prompts = load_sharegpt(path)
  answers = da.sharegpt_answers(path)
  assert sorted(answers) == ["sharegpt:a", "sharegpt:b"]
  rows = da.dataset_answer_rows(
    prompts,
    answers,
    encode_chat=tokenizer.encode_chat,
    decode=tokenizer.decode,
    stop_ids=tokenizer.stop_ids,
    max_prompt_tokens=64,
    max_new_tokens=24,
  )
  assert [r["id"] for r in rows] == [p.id for p in prompts]
  by_id = {r["id"]: r for r in rows}
  a, b = by_id["sharegpt:a"], by_id["sharegpt:b"]
  assert a["finish"] == "stop" and b["finish"] == "length" and len(b["response_ids"]) == 24
  for row, prompt in ((a, prompts[0]), (b, prompts[1])):
    assert row["prompt_ids"] == tokenizer.encode_chat(prompt.chat())
  # The whole rendering of prompt + answer, up to the end-of-turn token, token for token.
  full = tokenizer.apply_chat_template(
    [*prompts[0].chat(), {"role": "assistant", "content": RECORDS[0]["conversations"][1]["value"]}],
    False,
  )
  end = full.rindex("<|im_end|>") + len("<|im_end|>")  # the answer's (the system turn has one)
  assert tokenizer.decode(a["prompt_ids"] + a["response_ids"], skip_special=False) == full[:end]
  assert a["response_ids"][-1] in tokenizer.stop_ids
  assert {r["finish"] for r in rows if r["id"] not in by_id or r not in (a, b)} == {"error"}
  da.write_rows(rows, tmp_path / "answers.jsonl", {"answers": "dataset"})
  samples = samples_from_regenerated(read_regenerated(tmp_path / "answers.jsonl"), 512)
  assert len(samples) == 2 and sum(samples[0].loss_mask) == len(a["response_ids"])
