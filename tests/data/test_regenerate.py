"""Regeneration: input order, per-sample errors, and kill/resume with nothing skipped or doubled."""

import dataclasses
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dspark_jax.data.regenerate import RegenConfig, RegenerationError, read_regenerated, regenerate
from tests.data import regen_worker as worker

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  out = tmp_path_factory.mktemp("ref") / "regen.jsonl"
  summary = worker.run(out)
  return out, summary


def test_uninterrupted_run_is_in_input_order_with_errors_recorded(reference):
  out, summary = reference
  rows = read_regenerated(out)
  assert [r["index"] for r in rows] == list(range(22))
  assert [r["id"] for r in rows] == [p.id for p in worker.prompts()]
  assert rows[5]["finish"] == "error" and "max_prompt_tokens" in rows[5]["error"]
  assert summary.errors == 1 and summary.written == 22
  ok = [r for r in rows if r["finish"] != "error"]
  assert all(r["response_ids"] and r["finish"] in ("stop", "length") for r in ok)
  assert all(r["finish"] == "length" or r["response_ids"][-1] in worker.STOP for r in ok)
  assert len({tuple(r["response_ids"]) for r in ok}) > 15  # sampled, not degenerate


def test_killed_run_resumes_to_the_same_file(reference, tmp_path):
  ref_out, _ = reference
  out = tmp_path / "regen.jsonl"
  env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
  proc = subprocess.Popen(
    [sys.executable, str(ROOT / "tests" / "data" / "regen_worker.py"), str(out), "0.5"], env=env
  )
  deadline = time.time() + 300
  while time.time() < deadline and (not out.is_file() or out.read_text().count("\n") < 8):
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  written = out.read_text().count("\n")
  assert 8 <= written < 22, written  # killed mid-way
  with open(out, "a") as f:  # and as if the kill had landed in the middle of a line
    f.write('{"index": 99, "id": "t:')
  summary = worker.run(out)
  window = worker.CONFIG.batch_size * worker.CONFIG.sort_window
  assert summary.resumed_from % window == 0 and summary.resumed_from >= 8
  assert out.read_bytes() == ref_out.read_bytes()


def test_a_file_from_another_run_is_refused(reference, tmp_path):
  ref_out, _ = reference
  out = tmp_path / "regen.jsonl"
  lines = ref_out.read_text().splitlines()
  out.write_text("\n".join([lines[1], lines[0]]) + "\n")  # swapped order
  meta = Path(str(ref_out) + ".meta.json")
  Path(str(out) + ".meta.json").write_text(meta.read_text())
  with pytest.raises(RegenerationError, match="does not match prompt 0"):
    worker.run(out)
  settings = json.loads(meta.read_text()) | {"seed": 8}
  Path(str(out) + ".meta.json").write_text(json.dumps(settings))
  with pytest.raises(RegenerationError, match="other settings"):
    regenerate(
      worker.prompts(),
      out,
      encode=worker.encode,
      decode=worker.decode,
      generate_batch=None,
      config=worker.CONFIG,
      run_info={"model": "tiny"},
    )


def test_a_larger_limit_extends_the_file_and_a_smaller_one_is_refused(reference, tmp_path):
  ref_out, _ = reference
  out = tmp_path / "regen.jsonl"
  worker.run(out, limit=11)  # not a whole number of batches: the short batch is redone
  summary = worker.run(out)
  assert summary.resumed_from == 8
  assert out.read_bytes() == ref_out.read_bytes()
  with pytest.raises(RegenerationError, match="more than the 5 prompts"):
    worker.run(out, limit=5)
  assert out.read_bytes() == ref_out.read_bytes()  # nothing lost


def test_sorting_by_length_inside_a_window_does_not_change_the_answers(reference, tmp_path):
  ref_out, _ = reference
  out = tmp_path / "regen.jsonl"
  worker.run(out, config=dataclasses.replace(worker.CONFIG, sort_window=1))  # plain slices
  strip = lambda path: [json.loads(line)["response_ids"] for line in path.read_text().splitlines()]
  assert strip(out) == strip(ref_out)


def resume_complete(out, run_info):
  """Resumes a complete copy of the reference file: nothing to generate, so no model needed."""
  return regenerate(
    worker.prompts(),
    out,
    encode=worker.encode,
    decode=worker.decode,
    generate_batch=None,
    config=worker.CONFIG,
    stop_ids=worker.STOP,
    run_info=run_info,
    progress=False,
  )


def copy_reference(ref_out, out, **meta_changes):
  out.write_bytes(ref_out.read_bytes())
  meta = json.loads(Path(str(ref_out) + ".meta.json").read_text()) | meta_changes
  Path(str(out) + ".meta.json").write_text(json.dumps(meta))


def lock_is_free(out) -> bool:
  with open(str(out) + ".lock", "a") as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      return False
    return True


def test_a_second_process_on_the_same_file_is_refused(reference, tmp_path):
  ref_out, _ = reference
  assert lock_is_free(ref_out)  # released after a normal run
  out = tmp_path / "regen.jsonl"
  copy_reference(ref_out, out)
  holder = subprocess.Popen(
    [
      sys.executable,
      "-c",
      "import fcntl, sys, time; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); "
      "print('locked', flush=True); time.sleep(300)",
      str(out) + ".lock",
    ],
    stdout=subprocess.PIPE,
    text=True,
  )
  try:
    assert holder.stdout.readline() == "locked\n"
    with pytest.raises(
      RegenerationError, match=r"being written by another process \(lock .*regen\.jsonl\.lock\)"
    ):
      resume_complete(out, {"model": "tiny"})
    assert out.read_bytes() == ref_out.read_bytes()  # untouched
  finally:
    holder.kill()
    holder.wait()
  assert lock_is_free(out)  # the kernel dropped the dead process's lock
  assert resume_complete(out, {"model": "tiny"}).resumed_from == 22
  with pytest.raises(RegenerationError, match="other settings"):
    resume_complete(out, {"model": "other"})
  assert lock_is_free(out)  # released after an exception too


def test_a_lock_held_in_this_process_by_another_open_file_is_refused(reference, tmp_path):
  ref_out, _ = reference
  out = tmp_path / "regen.jsonl"
  copy_reference(ref_out, out)
  with open(str(out) + ".lock", "a") as f:
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with pytest.raises(RegenerationError, match="is being written by another process"):
      resume_complete(out, {"model": "tiny"})


def test_reading_duplicated_or_out_of_order_lines_is_refused(reference, tmp_path):
  ref_out, _ = reference
  lines = ref_out.read_text().splitlines()
  doubled = tmp_path / "doubled.jsonl"
  doubled.write_text("\n".join(lines[:4] + [lines[3]] + lines[4:]) + "\n")
  with pytest.raises(RegenerationError, match=r"doubled\.jsonl: line 5 has index 3, expected 4"):
    read_regenerated(doubled)
  swapped = tmp_path / "swapped.jsonl"
  swapped.write_text("\n".join([lines[1], lines[0]] + lines[2:]) + "\n")
  with pytest.raises(RegenerationError, match=r"swapped\.jsonl: line 1 has index 1, expected 0"):
    read_regenerated(swapped)
  two_runs = tmp_path / "two_runs.jsonl"  # what two concurrent runs used to leave
  two_runs.write_text("\n".join(lines + lines) + "\n")
  with pytest.raises(RegenerationError, match="line 23 has index 0, expected 22"):
    read_regenerated(two_runs)
  assert len(read_regenerated(ref_out)) == 22


def test_paths_in_the_settings_count_by_their_last_component(reference, tmp_path):
  ref_out, _ = reference
  out = tmp_path / "moved" / "regen.jsonl"  # the output moved too
  out.parent.mkdir()
  copy_reference(ref_out, out, model="/old/place/tiny.gguf", source="data/eval/gsm8k.jsonl")
  info = {"model": "/new/place/tiny.gguf", "source": "/abs/eval/gsm8k.jsonl"}
  assert resume_complete(out, info).resumed_from == 22
  with pytest.raises(RegenerationError, match="other settings"):
    resume_complete(out, info | {"model": "/new/place/other.gguf"})


@pytest.mark.parametrize(
  "field,value", [("temperature", float("inf")), ("temperature", float("nan")), ("top_p", 0.0)]
)
def test_non_finite_or_out_of_range_sampling_settings_are_refused(field, value):
  with pytest.raises(ValueError, match=field):
    RegenConfig(**{field: value})
