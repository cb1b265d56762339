"""Coverage of held-out answers by a reduced draft vocabulary of the N most frequent tokens.

    python experiments/draft_vocab_coverage.py --train data/smollm2_sharegpt_train.jsonl,runs/answers_2400.jsonl

The vocabulary is chosen from the answers of the `--train` files (the same rule as
`dspark-jax train ... draft.draft_vocab_size=N`: most frequent answer tokens, stop tokens
always in). Coverage is the share of answer tokens inside it, measured on answers it was not
chosen from:
  * ShareGPT holdout answers: the dataset's own first answers to the holdout prompts.
  * the target's answers (the regenerated file) when `--train` does not include it, i.e. a
    vocabulary chosen from dataset answers alone, applied to the target's own text.
Every token outside the vocabulary is a token the drafter can never propose, so 1 - coverage
bounds the share of target tokens a proposal can match.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dspark_jax.data import dataset_answers as da
from dspark_jax.data.prompts import load_sharegpt, split
from dspark_jax.data.regenerate import read_regenerated
from dspark_jax.drafters.draft_vocab import coverage, most_frequent_ids
from dspark_jax.io.load import load_model

REGENERATED = "data/smollm2_sharegpt_train.jsonl"


def answers_of(path: str) -> list[list[int]]:
  return [r["response_ids"] for r in read_regenerated(path) if r["finish"] != "error"]


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  ap.add_argument("--train", required=True, help="comma-separated regeneration-format JSONL files")
  ap.add_argument("--sizes", default="4096,8192,16384")
  ap.add_argument("--holdout", type=int, default=500, help="ShareGPT holdout answers to score")
  ap.add_argument("--out", default="results/draft_vocab_coverage.json")
  args = ap.parse_args()

  model = load_model("smollm2-135m")
  tok, vocab = model.tokenizer, model.config.vocab_size
  train_files = args.train.split(",")
  train = [a for f in train_files for a in answers_of(f)]
  _, holdout = split(load_sharegpt())
  rows = da.dataset_answer_rows(
    holdout[: args.holdout],
    da.sharegpt_answers(),
    encode_chat=tok.encode_chat,
    decode=tok.decode,
    stop_ids=tok.stop_ids,
    max_prompt_tokens=512,
    max_new_tokens=256,
  )
  held = [r["response_ids"] for r in rows if r["finish"] != "error"]
  scored = {"sharegpt_holdout_dataset_answers": held}
  if REGENERATED not in train_files and Path(REGENERATED).is_file():
    scored["target_regenerated_answers"] = answers_of(REGENERATED)
  table = []
  for n in map(int, args.sizes.split(",")):
    ids = most_frequent_ids(train, n, vocab, always=tok.stop_ids)
    row = {"N": n, "train_in_sample": coverage(ids, train)}
    row |= {name: coverage(ids, seqs) for name, seqs in scored.items()}
    table.append(row)
    print(json.dumps(row))
  result = {
    "command": "python experiments/draft_vocab_coverage.py --train " + args.train,
    "train_files": train_files,
    "train_answers": len(train),
    "train_tokens": sum(map(len, train)),
    "scored": {name: {"answers": len(s), "tokens": sum(map(len, s))} for name, s in scored.items()},
    "target_vocab": vocab,
    "table": table,
  }
  Path(args.out).parent.mkdir(parents=True, exist_ok=True)
  Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
  main()
