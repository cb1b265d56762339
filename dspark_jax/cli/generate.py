"""`dspark-jax generate`: plain or speculative decoding of a few prompts."""

from __future__ import annotations

import sys
import time

from dspark_jax.cli.common import (
  add_verify_slots,
  check_ngram_flags,
  check_verify_slots,
  finite_float,
  load_drafter_from_flags,
)
from dspark_jax.cli.schedule import add_schedule_flags, check_schedule_flags, resolve_schedule

NGRAM_DRAFT_LEN, NGRAM_MAX = 4, 3  # the n-gram drafter's defaults here


def add_parser(sub) -> None:
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
  p.add_argument("--temperature", type=finite_float, default=0.0, help="0 = greedy")
  p.add_argument("--top-k", type=int, default=0, help="0 = off")
  p.add_argument("--top-p", type=finite_float, default=1.0)
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
    "--draft-len",
    type=int,
    default=None,
    help=f"G: draft tokens per round of the n-gram drafter (default {NGRAM_DRAFT_LEN}); a trained "
    "drafter's G is its block size (use --verify-slots to verify fewer)",
  )
  p.add_argument(
    "--ngram",
    type=int,
    default=None,
    help=f"longest n-gram the n-gram drafter matches (default {NGRAM_MAX})",
  )
  add_verify_slots(p)
  add_schedule_flags(p)
  p.add_argument(
    "--compare-plain",
    action="store_true",
    help="with a drafter: also decode the prompts plainly and print both speeds and the speedup "
    "(greedy: and whether the outputs are identical)",
  )


def run(args) -> int:
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
  check_ngram_flags(args, "ngram")
  args.draft_len = NGRAM_DRAFT_LEN if args.draft_len is None else args.draft_len
  args.ngram = NGRAM_MAX if args.ngram is None else args.ngram
  check_verify_slots(args.verify_slots)
  check_schedule_flags(args)
  if args.drafter == "none" and (args.schedule or args.profile):
    raise ValueError("--schedule and --profile need a drafter")
  if args.drafter == "checkpoint":
    from dspark_jax.io.deepspec import check_drafter_folder

    check_drafter_folder(args.drafter_path)  # before the model loads
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

    drafter, draft_params, name = load_drafter_from_flags(
      args, model, params, args.draft_len, args.ngram
    )
    spec = SpecConfig(args.max_new_tokens, sampling, stop_ids=tok.stop_ids, pad_id=tok.pad_id or 0)
    policy, schedule_desc = resolve_schedule(
      args, model, params, drafter, draft_params, len(prompts), quiet=args.no_progress
    )
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
      schedule=policy,
    )
    per_round = (
      f"; {name} drafter, G={drafter.draft_len}, schedule {schedule_desc}: "
      f"{result.mean_accepted_length:.2f} tokens per round (bonus included), "
      f"{result.mean_verified_length:.2f} drafts verified per round, "
      f"{result.drafted_share:.0%} of rounds drafted"
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
