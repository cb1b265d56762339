"""Answer regeneration: the target answers each training prompt, resumably, in input order.

The output is JSONL, one line per prompt in input order: index, prompt id, messages, the prompt
and response token ids, the response text, how it finished ("stop", "length" or "error") and
the error if any. A sidecar `<out>.meta.json` records the settings (model, source, split,
sampling, lengths, batch size).

Prompts are answered a window at a time (`sort_window` batches: fixed slices of the prompt
list), sorted by length inside the window so that each batch pads little; the window's lines are
then written in input order.

Resuming after a kill at any point: a partial last line is cut off, the file is rolled back to the
last whole window (`sort_window` x `batch_size` prompts, not the last batch), every kept line is
checked against the prompt list (index and id), and generation continues from there. Every random
draw is keyed by (seed, prompt index, position), so a resumed run writes exactly the lines an
uninterrupted run writes: no sample skipped, none duplicated, none changed. (DeepSpec writes in
completion order and resumes by line count, which can skip or duplicate samples.) The number of
prompts is not a setting: a run with a larger `--limit` extends the file, because the kept lines are
checked one by one against the prompt list.

One run at a time: a run holds an exclusive lock on `<out>.lock` (flock, released by the kernel
when the process ends however it ends), and a second run on the same file is refused. Paths in
the recorded settings (say, a model file or a source JSONL) are compared by their last
component only, so a run can be resumed from another directory or with the model moved.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from dspark_jax.data.prompts import Prompt
from dspark_jax.decoding.sampling import SamplingParams


class RegenerationError(ValueError):
  """The output file does not belong to this run (other prompts or settings), or is corrupt."""


@dataclasses.dataclass(frozen=True)
class RegenConfig:
  """DeepSpec's sampling defaults for Qwen3 (T 0.7, top-p 0.8, top-k 20)."""

  max_new_tokens: int = 256
  # Longer prompts are recorded as errors rather than cut: a truncated question gets an answer
  # to a different question.
  max_prompt_tokens: int = 512
  batch_size: int = 16
  # Prompts are answered in windows of `sort_window` batches, sorted by length inside the
  # window (short prompts batch with short ones: less padding); lines are still written in input
  # order, one window at a time, and a resume restarts the unfinished window.
  sort_window: int = 8
  temperature: float = 0.7
  top_k: int = 20
  top_p: float = 0.8
  seed: int = 42

  def __post_init__(self):
    for name in ("max_new_tokens", "max_prompt_tokens", "batch_size", "sort_window"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
    SamplingParams(self.temperature, self.top_k, self.top_p)  # the same checks (finite, ranges)


@dataclasses.dataclass
class RegenSummary:
  written: int  # lines written by this call
  resumed_from: int  # lines kept from an earlier run
  errors: int
  tokens: int
  seconds: float


GenerateBatch = Callable[[Sequence[Sequence[int]], Sequence[int]], list[list[int]]]


def _meta_path(out: Path) -> Path:
  return out.with_name(out.name + ".meta.json")


def _lock_path(out: Path) -> Path:
  return out.with_name(out.name + ".lock")


@contextlib.contextmanager
def _exclusive(out: Path):
  """Holds an exclusive flock on `<out>.lock` for the block; refuses at once if another process
  holds it. The kernel drops the lock when the file is closed or the process dies, so a killed
  run leaves no stale lock (the lock file itself stays: deleting it would race a new run)."""
  lock = _lock_path(out)
  with open(lock, "a") as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise RegenerationError(
        f"{out} is being written by another process (lock {lock}); wait for it or write to "
        "another file"
      ) from None
    yield


def _identity(value):
  """A setting as compared on resume: a string naming a path (it holds a separator) counts by
  its last component, so moving a model file or resuming from another directory is not a new
  run; everything else as it is."""
  if isinstance(value, str) and ("/" in value or os.sep in value):
    return Path(value).name
  return value


def _check_meta(out: Path, meta: dict) -> None:
  path = _meta_path(out)
  if path.is_file():
    old = json.loads(path.read_text())
    diff = {k: (old.get(k), v) for k, v in meta.items() if _identity(old.get(k)) != _identity(v)}
    if diff:
      raise RegenerationError(
        f"{out} was written by a run with other settings {diff} (old, new); resume with the "
        "same settings or write to a new file"
      )
  else:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    tmp.replace(path)


def _resume_point(out: Path, prompts: Sequence[Prompt], window: int) -> int:
  """Validates the existing lines, truncates to the last whole window, returns its length."""
  if not out.is_file():
    return 0
  data = out.read_bytes()
  offsets = [0]  # byte offset after each complete line
  for k, line in enumerate(data.split(b"\n")[:-1]):  # the piece after the last "\n" is partial
    try:
      row = json.loads(line)
    except json.JSONDecodeError:
      raise RegenerationError(f"{out}: line {k + 1} is not valid JSON") from None
    if k >= len(prompts):
      raise RegenerationError(
        f"{out} already holds more than the {len(prompts)} prompts of this run; raise the "
        "limit or write to a new file"
      )
    if row.get("index") != k or row.get("id") != prompts[k].id:
      raise RegenerationError(
        f"{out}: line {k + 1} (id {row.get('id')!r}) does not match prompt {k} of this run"
      )
    offsets.append(offsets[-1] + len(line) + 1)
  complete = len(offsets) - 1
  keep = complete if complete == len(prompts) else complete - complete % window
  with open(out, "r+b") as f:
    f.truncate(offsets[keep])
  return keep


def _encode(encode, prompt: Prompt, max_prompt_tokens: int) -> tuple[list[int], str | None]:
  """(token ids, None) or ([], why the prompt cannot run)."""
  try:
    x = encode(prompt)
  except ValueError as e:
    return [], str(e)
  if not x:
    return [], "the prompt encodes to no tokens"
  if len(x) > max_prompt_tokens:
    return [], f"prompt has {len(x)} tokens, more than max_prompt_tokens={max_prompt_tokens}"
  return x, None


def _generate_window(ids, problems, first: int, generate_batch, bs: int, pad_prompt, bar) -> dict:
  """{position in window: response ids}: the runnable prompts sorted by length, in batches of
  `bs` (short ones padded with `pad_prompt`), so each batch's padded width stays small."""
  runnable = sorted((j for j, p in enumerate(problems) if p is None), key=lambda j: len(ids[j]))
  outputs = {}
  for b in range(0, len(runnable), bs):
    members = runnable[b : b + bs]
    batch = [ids[j] for j in members] + [list(pad_prompt)] * (bs - len(members))
    # Request ids are the prompts' indices, so random draws do not depend on the grouping.
    request_ids = [first + j for j in members] + [first] * (bs - len(members))
    # zip stops at the real members: the padding rows' outputs are dropped.
    for j, resp in zip(members, generate_batch(batch, request_ids), strict=False):
      outputs[j] = resp
    bar.update(len(members))
  bar.update(len(ids) - len(runnable))
  return outputs


def regenerate(
  prompts: Sequence[Prompt],
  out_path: str | Path,
  *,
  encode: Callable[[Prompt], list[int]],
  decode: Callable[[list[int]], str],
  generate_batch: GenerateBatch,
  config: RegenConfig,
  stop_ids: Sequence[int] = (),
  pad_prompt: Sequence[int] = (0,),
  run_info: dict | None = None,
  progress: bool = True,
) -> RegenSummary:
  """Writes (or completes) the regeneration file for `prompts`.

  Args:
    prompts: the prompts, in output order.
    out_path: the JSONL file.
    encode: prompt -> token ids (chat template applied, generation prompt added).
    decode: response ids -> text.
    generate_batch: (token prompts, request ids) -> generated ids per prompt; always called with
      `config.batch_size` prompts (short batches are padded with `pad_prompt`).
    config: settings; with `run_info` (say, the model name) they must match on resume.

  Raises:
    RegenerationError: the file belongs to another run, is corrupt, or is being written by
      another process.
  """
  out = Path(out_path)
  out.parent.mkdir(parents=True, exist_ok=True)
  with _exclusive(out):
    return _regenerate(
      prompts, out, encode, decode, generate_batch, config, stop_ids, pad_prompt, run_info, progress
    )


def _regenerate(
  prompts, out, encode, decode, generate_batch, config, stop_ids, pad_prompt, run_info, progress
) -> RegenSummary:
  """`regenerate`, with the lock held."""
  from tqdm import tqdm

  meta = {**dataclasses.asdict(config), **(run_info or {})}
  _check_meta(out, meta)
  window = config.batch_size * config.sort_window
  start_index = _resume_point(out, prompts, window)
  errors = tokens = written = 0
  start = time.perf_counter()
  bar = tqdm(total=len(prompts), initial=start_index, desc="regenerate", disable=not progress)
  with open(out, "a", encoding="utf-8") as f:
    for first in range(start_index, len(prompts), window):
      chunk = list(prompts[first : first + window])
      ids, problems = zip(
        *(_encode(encode, p, config.max_prompt_tokens) for p in chunk), strict=True
      )
      outputs = _generate_window(
        ids, problems, first, generate_batch, config.batch_size, pad_prompt, bar
      )
      lines = []
      for j, p in enumerate(chunk):
        row = {"index": first + j, "id": p.id, "messages": p.chat(), "prompt_ids": ids[j]}
        if problems[j] is not None:
          row |= {"response_ids": [], "response": "", "finish": "error", "error": problems[j]}
          errors += 1
        else:
          resp = outputs[j]
          finish = "stop" if resp and resp[-1] in stop_ids else "length"
          row |= {"response_ids": resp, "response": decode(resp), "finish": finish, "error": None}
          tokens += len(resp)
        lines.append(json.dumps(row, ensure_ascii=False))
      f.write("\n".join(lines) + "\n")
      f.flush()
      os.fsync(f.fileno())
      written += len(chunk)
  bar.close()
  return RegenSummary(written, start_index, errors, tokens, time.perf_counter() - start)


def read_regenerated(path: str | Path) -> list[dict]:
  """The complete lines of a regeneration file (a partial last line is left out).

  Raises:
    RegenerationError: a line that is not JSON, or whose `index` is not its line number (0, 1,
      2, ...): a duplicated or out-of-order line, as two runs writing one file would leave.
  """
  rows = []
  with open(path, encoding="utf-8") as f:
    for k, line in enumerate(f):
      if not line.endswith("\n"):
        break
      try:
        row = json.loads(line)
      except json.JSONDecodeError:
        raise RegenerationError(f"{path}: line {k + 1} is not valid JSON") from None
      index = row.get("index") if isinstance(row, dict) else None
      if index != k:
        raise RegenerationError(
          f"{path}: line {k + 1} has index {index!r}, expected {k} (a duplicated or out-of-order "
          "line; regenerate it into a new file)"
        )
      rows.append(row)
  return rows


def target_generate_batch(params, model_config, gen_config, max_prompt_tokens: int, seed: int):
  """A `GenerateBatch` over the target. Prompts are padded to the smallest of a few widths (64,
  128, 256, ... up to `max_prompt_tokens`), so at most a handful of programs are compiled and a
  batch of short prompts does not pay for the longest allowed prefill."""
  from dspark_jax.decoding.generate import generate, round_up

  widest = round_up(max_prompt_tokens, 16)

  def run(prompts, request_ids):
    width = 64
    while width < max(map(len, prompts)):
      width *= 2
    width = min(width, widest)
    capacity = round_up(width + gen_config.max_new_tokens, 64)
    result = generate(
      params,
      model_config,
      prompts,
      gen_config,
      seed=seed,
      request_ids=request_ids,
      cache_capacity=capacity,
      prompt_width=width,
    )
    return result.tokens

  return run
