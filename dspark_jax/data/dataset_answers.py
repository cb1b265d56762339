"""Training rows from a dataset's own answers: no target run, the same file format as regeneration.

A drafter learns the target's distribution: every loss compares the draft with the target's
probabilities at each position (the soft labels), and those come from a target forward over
the text, whoever wrote it. Regeneration makes the text itself the target's (what the drafter
will see at inference) at the cost of generating every token, one decode step each; a dataset
answer only needs the one forward pass that the feature cache runs anyway. On a 2-core CPU that
is roughly 10x more training text per CPU hour (TRAINING.md has the measured rates), at the
price of a shift between the answers trained on (ShareGPT's, mostly ChatGPT's) and the ones
drafted for (the target's).

A row holds what `regenerate` writes (index, id, messages, prompt_ids, response_ids, response,
finish, error) plus `answers: "dataset"`. The response ids are the chat template's rendering of
the assistant turn, up to and including its end-of-turn token, cut at `max_new_tokens`
(finish "length") like a regenerated answer. A conversation whose first user turn has no
assistant answer after it, or whose prompt is too long, is an error row (skipped in training).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from dspark_jax.data.prompts import (
  ROLES,
  Prompt,
  iter_json_array,
  prompt_from_conversation,
  sharegpt_path,
)


def first_answer(record: dict) -> str | None:
  """The assistant turn right after the first user turn (after an optional system turn), or
  None when there is none or it is empty."""
  seen_user = False
  for turn in record.get("conversations") or []:
    role = ROLES.get(str(turn.get("from", "")).lower())
    content = str(turn.get("value") or "").strip()
    if not seen_user:
      seen_user = role == "user"
      continue
    return content if role == "assistant" and content else None
  return None


def sharegpt_answers(path: str | Path | None = None) -> dict[str, str]:
  """{prompt id: first answer} of every ShareGPT conversation that gives a prompt and an answer
  (the first record of an id wins, as in `prompts.dedupe`)."""
  text = Path(path or sharegpt_path()).read_text(encoding="utf-8")
  out: dict[str, str] = {}
  for record in iter_json_array(text):
    prompt = prompt_from_conversation(record, "sharegpt")
    answer = first_answer(record)
    if prompt is not None and answer is not None:
      out.setdefault(prompt.id, answer)
  return out


def answer_ids(
  prompt_ids: Sequence[int], full_ids: Sequence[int], stop_ids: Iterable[int]
) -> list[int] | None:
  """The assistant turn's ids: `full_ids` (the rendered conversation with the answer) after
  `prompt_ids`, up to and including the first stop token; None when the rendering does not
  start with the prompt's ids or has no stop token after them."""
  n = len(prompt_ids)
  if list(full_ids[:n]) != list(prompt_ids):
    return None
  stops = set(stop_ids)
  rest = list(full_ids[n:])
  for i, t in enumerate(rest):
    if t in stops:
      return rest[: i + 1]
  return None


def dataset_answer_rows(
  prompts: Sequence[Prompt],
  answers: dict[str, str],
  *,
  encode_chat: Callable[..., list[int]],
  decode: Callable[[list[int]], str],
  stop_ids: Sequence[int],
  max_prompt_tokens: int,
  max_new_tokens: int,
) -> list[dict]:
  """One regeneration-format row per prompt, in order (see the module docstring).

  encode_chat(messages, add_generation_prompt) -> ids: the target tokenizer's chat template.
  """
  rows = []
  for index, p in enumerate(prompts):
    row = {"index": index, "id": p.id, "messages": p.chat(), "answers": "dataset"}
    prompt_ids = encode_chat(p.chat(), True)
    answer = answers.get(p.id)
    problem = None
    if not prompt_ids:
      problem = "the prompt encodes to no tokens"
    elif len(prompt_ids) > max_prompt_tokens:
      problem = (
        f"prompt has {len(prompt_ids)} tokens, more than max_prompt_tokens={max_prompt_tokens}"
      )
    elif answer is None:
      problem = "the conversation has no assistant answer after its first user turn"
    resp = None
    if problem is None:
      full = encode_chat([*p.chat(), {"role": "assistant", "content": answer}], False)
      resp = answer_ids(prompt_ids, full, stop_ids)
      if resp is None:
        problem = "the chat template does not render the answer after the prompt's tokens"
    row["prompt_ids"] = prompt_ids
    if problem is not None:
      row |= {"response_ids": [], "response": "", "finish": "error", "error": problem}
    else:
      finish = "stop" if len(resp) <= max_new_tokens else "length"
      resp = resp[:max_new_tokens]
      row |= {"response_ids": resp, "response": decode(resp), "finish": finish, "error": None}
    rows.append(row)
  return rows


def write_rows(rows: Sequence[dict], out: str | Path, meta: dict) -> None:
  """Writes the JSONL (and `<out>.meta.json`) atomically: a kill leaves no partial file."""
  out = Path(out)
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = out.with_name(out.name + ".tmp")
  tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
  out.with_name(out.name + ".meta.json").write_text(json.dumps(meta, indent=2) + "\n")
  tmp.replace(out)
