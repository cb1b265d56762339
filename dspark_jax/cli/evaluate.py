"""`dspark-jax eval`: tau and per-slot acceptance of a drafter over benchmark files."""

from __future__ import annotations

import sys

from dspark_jax.cli.common import (
  add_verify_slots,
  check_ngram_flags,
  check_verify_slots,
  finite_float,
)
from dspark_jax.cli.schedule import add_schedule_flags, check_schedule_flags, resolve_schedule


def add_parser(sub) -> None:
  p = sub.add_parser(
    "eval", help="tau and acceptance of a drafter over benchmark files (per benchmark/domain)"
  )
  p.add_argument("--model", default="smollm2-135m")
  p.add_argument("--drafter", required=True, help="a drafter folder (DeepSpec format) or 'ngram'")
  p.add_argument(
    "--benchmarks",
    nargs="+",
    default=["gsm8k", "math500", "aime25", "mbpp", "humaneval", "mt-bench"],
    help="JSONL files with a `turns` field, or names of files in --data-dir",
  )
  p.add_argument(
    "--data-dir", default=None, help="folder of NAME.jsonl files (default: the bundled ones)"
  )
  p.add_argument(
    "--cap",
    action="append",
    default=[],
    metavar="NAME=N",
    help="prompts per benchmark (after the seeded shuffle); the paper's caps apply otherwise "
    "(gsm8k 500, math500 500, aime25 30, mbpp 256, humaneval 164, mt-bench 80)",
  )
  p.add_argument("--limit", type=int, default=None, help="at most this many prompts per benchmark")
  p.add_argument("--temperature", type=finite_float, default=1.0)
  p.add_argument("--max-new-tokens", type=int, default=256)
  p.add_argument("--max-prompt-tokens", type=int, default=1024, help="longer prompts are skipped")
  p.add_argument("--batch-size", type=int, default=8)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument(
    "--draft-len", type=int, default=None, help="G of the n-gram drafter (default 7; ngram only)"
  )
  add_verify_slots(p)
  add_schedule_flags(p, default_help="fixed (acceptance is measured on full verification)")
  p.add_argument("--out", default="results/eval", help="folder for eval.json and eval.csv")
  p.add_argument("--no-progress", action="store_true")


def _benchmark_files(names, data_dir) -> dict:
  from pathlib import Path

  from dspark_jax.benchmarks import benchmark_path

  files = {}
  for name in names:
    path = Path(name)
    if path.suffix == ".jsonl":
      pass
    elif data_dir is None:
      path = benchmark_path(name)
    else:
      path = Path(data_dir) / f"{name}.jsonl"
    if not path.is_file():
      raise FileNotFoundError(f"benchmark file not found: {path}")
    files[path.stem] = path
  return files


def _caps(items: list[str], limit: int | None) -> dict:
  from dspark_jax.eval.harness import PAPER_CAPS

  caps = dict(PAPER_CAPS)
  for item in items:
    name, sep, value = item.partition("=")
    if not sep or not value.isdigit() or int(value) < 1:
      raise ValueError(f"--cap takes NAME=N with N >= 1, got {item!r}")
    caps[name] = int(value)
  if limit is not None:
    if limit < 1:
      raise ValueError(f"--limit must be >= 1, got {limit}")
    caps = {k: min(v, limit) for k, v in caps.items()} | {"*": limit}
  return caps


def run(args) -> int:
  import dataclasses

  from dspark_jax.eval import harness

  settings = harness.EvalSettings(args.temperature, args.max_new_tokens, args.batch_size, args.seed)
  files = _benchmark_files(args.benchmarks, args.data_dir)
  caps = _caps(args.cap, args.limit)
  check_verify_slots(args.verify_slots)
  check_schedule_flags(args)
  check_ngram_flags(args, "ngram")
  if args.drafter != "ngram":
    from dspark_jax.io.deepspec import check_drafter_folder

    check_drafter_folder(args.drafter)
  from dspark_jax.data.prompts import domain_of, load_benchmarks

  benchmarks = load_benchmarks(files)  # every file checked before the model loads
  import jax
  from tqdm import tqdm

  from dspark_jax.io.load import load_model

  model = load_model(args.model)
  params = jax.device_put(model.params)
  tok = model.tokenizer
  from dspark_jax.io.deepspec import open_drafter

  drafter, draft_params = open_drafter(
    args.drafter,
    model.config,
    params,
    ngram_len=args.draft_len or 7,
    verify_slots=args.verify_slots,
  )
  policy, schedule_desc = resolve_schedule(
    args,
    model,
    params,
    drafter,
    draft_params,
    settings.batch_size,
    default="fixed",
    quiet=args.no_progress,
  )
  record = {
    "model": args.model,
    "drafter": args.drafter,
    "verify_slots": drafter.draft_len,
    "schedule": schedule_desc,
    "settings": dataclasses.asdict(settings),
    "benchmarks": {},
    "skipped_long_prompts": {},
  }
  for name, benchmark in benchmarks.items():
    prompts = harness.select(benchmark, caps.get(name, caps.get("*")), args.seed, name)
    ids = [tok.encode_chat(p.chat()) for p in prompts]
    kept = [x for x in ids if len(x) <= args.max_prompt_tokens]
    record["skipped_long_prompts"][name] = len(ids) - len(kept)
    bar = tqdm(total=len(kept), desc=name, disable=args.no_progress, file=sys.stderr)
    record["benchmarks"][name] = harness.run_benchmark(
      params,
      model.config,
      drafter,
      draft_params,
      kept,
      settings,
      stop_ids=tok.stop_ids,
      pad_id=tok.pad_id or 0,
      progress=bar,
      schedule=policy,
    )
    bar.close()
    record["domains"] = harness.macro_averages(record["benchmarks"], domain_of)
    harness.write_results(args.out, record)  # after every benchmark: a kill keeps the done ones
  print(harness.table(record))
  print(f"results in {args.out}/eval.json and eval.csv", file=sys.stderr)
  return 0
