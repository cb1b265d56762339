"""Prompt loading: truncated ShareGPT, role handling, dedupe, a stable seeded split, benchmarks."""

import json

import pytest

from dspark_jax.benchmarks import BENCHMARK_DIR
from dspark_jax.data.prompts import (
  Prompt,
  dedupe,
  iter_json_array,
  load_benchmark,
  load_benchmarks,
  load_sharegpt,
  prompt_from_conversation,
  sharegpt_path,
  split,
)

EVAL = BENCHMARK_DIR


def conv(*turns, rid="x"):
  return {"id": rid, "conversations": [{"from": f, "value": v} for f, v in turns]}


def test_truncated_array_keeps_only_complete_records():
  records = [conv(("human", "a"), rid="1"), conv(("human", "b"), rid="2")]
  text = json.dumps(records, indent=2)
  cut = text[: text.rindex('"b"') + 2]  # cut inside the second record
  assert [r["id"] for r in iter_json_array(text)] == ["1", "2"]
  assert [r["id"] for r in iter_json_array(cut)] == ["1"]


def test_roles_system_first_and_empty_turns():
  p = prompt_from_conversation(
    conv(("system", "Be brief."), ("human", " Hi "), ("gpt", "Hello")), "s"
  )
  assert p.messages == (("system", "Be brief."), ("user", "Hi")) and p.id == "s:x"
  assert prompt_from_conversation(conv(("gpt", "I start"), ("human", "q")), "s") is None
  assert prompt_from_conversation(conv(("human", "   "), ("gpt", "a")), "s") is None
  assert prompt_from_conversation(conv(), "s") is None


def test_dedupe_and_split():
  ps = [Prompt(f"s:{i}", (("user", f"q {i % 50}"),), "s") for i in range(100)]
  ps.append(Prompt("s:dup", (("user", "q  1"),), "s"))  # same text up to whitespace
  unique = dedupe(ps)
  assert len(unique) == 50
  train, holdout = split(unique, 0.2, seed=1)
  assert len(train) + len(holdout) == 50 and 3 <= len(holdout) <= 20
  assert not {p.id for p in train} & {p.id for p in holdout}
  # Stable: a prompt stays on its side when others are removed.
  train2, holdout2 = split(unique[10:], 0.2, seed=1)
  assert {p.id for p in holdout2} == {p.id for p in holdout} - {p.id for p in unique[:10]}
  with pytest.raises(ValueError, match="holdout_fraction"):
    split(unique, 1.0)


def test_sharegpt_package_has_about_11100_usable_conversations():
  try:
    sharegpt_path()
  except FileNotFoundError as e:
    pytest.skip(str(e))
  records = list(iter_json_array(sharegpt_path().read_text(encoding="utf-8")))
  usable = [p for p in (prompt_from_conversation(r, "sharegpt") for r in records) if p]
  assert 11_000 <= len(usable) <= 11_300, len(usable)  # the package's documented ~11,100
  prompts = load_sharegpt()  # deduplicated: repeated questions ("hi", ...) are dropped
  assert 9_500 <= len(prompts) < len(usable)
  assert all(p.messages[-1][0] == "user" and p.text for p in prompts)


def test_benchmark_files_and_errors(tmp_path):
  if not (EVAL / "gsm8k.jsonl").is_file():
    pytest.skip("benchmark prompts not found")
  gsm = load_benchmark(EVAL / "gsm8k.jsonl")
  assert len(gsm) > 100 and gsm[0].source == "gsm8k" and gsm[0].messages[0][0] == "user"
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"turns": ["ok"]}\n{"turns": []}\n')
  with pytest.raises(ValueError, match="bad.jsonl:2"):
    load_benchmark(bad)


def write_jsonl(path, *lines):
  path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
  return path


@pytest.mark.parametrize(
  "line, found",
  [
    ('{"turns": "What is 2+2?"}', "`turns` must be a list of strings, got str"),
    ('{"turns": {"q": "What is 2+2?"}}', "`turns` must be a list of strings, got dict"),
    ('{"turns": 4}', "`turns` must be a list of strings, got int"),
    ('{"turns": [4]}', "`turns` must be a list of strings, got a list holding int"),
    (
      '{"turns": ["What?", null]}',
      "`turns` must be a list of strings, got a list holding NoneType",
    ),
    ('{"turns": []}', "got an empty list"),
    ('{"turns": ["  "]}', "the first turn in `turns` is empty"),
    ('{"question": "What is 2+2?"}', "no `turns` field"),
    ('["What is 2+2?"]', "a record must be a JSON object, got list"),
    ('"What is 2+2?"', "a record must be a JSON object, got str"),
  ],
)
def test_a_malformed_benchmark_record_names_its_line_and_what_was_found(tmp_path, line, found):
  path = write_jsonl(tmp_path / "bench.jsonl", '{"turns": ["ok"]}', "", line)
  with pytest.raises(ValueError, match=r"bench\.jsonl:3: ") as e:
    load_benchmark(path)
  assert found in str(e.value) and "\n" not in str(e.value)


def test_a_valid_benchmark_uses_the_whole_first_turn(tmp_path):
  path = write_jsonl(
    tmp_path / "mt.jsonl",
    '{"question_id": 81, "turns": [" What is 2+2? ", "And 3+3?"]}',
    '{"turns": ["Name a colour."]}',
  )
  prompts = load_benchmark(path)
  assert [p.id for p in prompts] == ["mt:81", "mt:2"]
  assert [p.text for p in prompts] == ["What is 2+2?", "Name a colour."]
  assert prompts[0].messages == (("user", "What is 2+2?"),) and prompts[0].source == "mt"


def test_load_benchmarks_validates_every_file_before_returning(tmp_path):
  good = write_jsonl(tmp_path / "good.jsonl", '{"turns": ["q1"]}', '{"turns": ["q2"]}')
  bad = write_jsonl(tmp_path / "bad.jsonl", '{"turns": ["q"]}', '{"turns": "q"}')
  loaded = load_benchmarks({"good": good, "other": str(good)})
  assert list(loaded) == ["good", "other"] and [p.text for p in loaded["good"]] == ["q1", "q2"]
  with pytest.raises(ValueError, match=r"bad\.jsonl:2: `turns` must be a list of strings, got str"):
    load_benchmarks({"good": good, "bad": bad})  # the second file fails, before any is used
  missing = tmp_path / "gone.jsonl"
  with pytest.raises(FileNotFoundError, match=r"benchmark file not found: gone \(.*gone\.jsonl\)"):
    load_benchmarks({"good": good, "gone": missing, "bad": bad})  # missing files come first
