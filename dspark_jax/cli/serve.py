"""`dspark-jax serve`: the OpenAI-compatible server over the continuous-batching engine."""

from __future__ import annotations

import sys

from dspark_jax.cli.common import (
  add_verify_slots,
  check_verify_slots,
  load_drafter_from_flags,
)
from dspark_jax.cli.schedule import add_schedule_flags, check_schedule_flags, resolve_schedule

NGRAM_DRAFT_LEN, NGRAM_MAX = 4, 3


def add_parser(sub) -> None:
  p = sub.add_parser("serve", help="serve a model over an OpenAI-compatible HTTP API")
  p.add_argument(
    "--model", default="smollm2-135m", help="bundled name, a .gguf file or an HF folder"
  )
  p.add_argument("--drafter-path", default=None, help="a drafter folder in DeepSpec format")
  p.add_argument(
    "--drafter",
    default=None,
    choices=("none", "ngram", "checkpoint"),
    help="none = plain decoding; default: checkpoint with --drafter-path, else none",
  )
  p.add_argument("--slots", type=int, default=8, help="requests decoded at once")
  p.add_argument(
    "--max-context", type=int, default=1024, help="tokens per request: prompt + completion"
  )
  p.add_argument(
    "--max-tokens", type=int, default=512, help="the largest completion a request may ask"
  )
  p.add_argument("--served-model-name", default=None, help="the name clients use (default --model)")
  p.add_argument("--host", default="127.0.0.1")
  p.add_argument("--port", type=int, default=8000)
  p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  p.add_argument(
    "--drain-seconds",
    type=float,
    default=600.0,
    help="on SIGTERM, how long in-flight requests may take to finish",
  )
  p.add_argument(
    "--warm-up",
    default="16,32,64,128",
    help="prompt buckets (tokens, comma-separated) compiled before the server opens; others "
    "compile on first use",
  )
  add_verify_slots(p)
  add_schedule_flags(p)


def run(args) -> int:
  if args.drafter is None:
    args.drafter = "checkpoint" if args.drafter_path else "none"
  if args.drafter == "checkpoint" and not args.drafter_path:
    raise ValueError("--drafter checkpoint needs --drafter-path FOLDER")
  if args.slots < 1 or args.max_tokens < 1 or args.max_context < 2:
    raise ValueError("--slots, --max-tokens and --max-context must be positive")
  if not 0 < args.port < 65536:
    raise ValueError(f"--port must be in 1..65535, got {args.port}")
  try:
    buckets = tuple(int(x) for x in args.warm_up.split(",") if x.strip())
  except ValueError:
    raise ValueError(
      f"--warm-up must be comma-separated token counts, got {args.warm_up!r}"
    ) from None
  check_verify_slots(args.verify_slots)
  check_schedule_flags(args)
  if args.drafter == "none" and (args.schedule not in (None, "fixed") or args.profile):
    raise ValueError("--schedule and --profile need a drafter")
  try:
    import starlette  # noqa: F401
    import uvicorn
  except ImportError:
    raise ValueError(
      "dspark-jax serve needs the serve extra: pip install 'dspark-jax[serve]'"
    ) from None
  if args.drafter == "checkpoint":
    from dspark_jax.io.deepspec import check_drafter_folder

    check_drafter_folder(args.drafter_path)
  import jax

  from dspark_jax.decoding import scheduler
  from dspark_jax.io.load import load_model
  from dspark_jax.serving.engine import Engine
  from dspark_jax.serving.server import build_app, warm_up

  model = load_model(args.model, args.dtype)
  params = jax.device_put(model.params)
  drafter, draft_params, name = load_drafter_from_flags(
    args, model, params, NGRAM_DRAFT_LEN, NGRAM_MAX
  )
  if args.drafter == "none":
    policy, desc = scheduler.Fixed(0), "plain decoding"
  else:
    # The engine's forward always covers every slot, so costs are profiled at --slots rows.
    policy, desc = resolve_schedule(args, model, params, drafter, draft_params, args.slots)
    desc = f"{name} drafter, G={drafter.draft_len}, schedule {desc}"
  tok = model.tokenizer
  engine = Engine(
    params,
    model.config,
    drafter,
    draft_params,
    slots=args.slots,
    max_context=args.max_context,
    max_tokens=min(args.max_tokens, args.max_context - 16),
    schedule=policy,
    stop_ids=tok.stop_ids,
    pad_id=tok.pad_id or 0,
  )
  print(f"dspark-jax serve: {args.model} ({desc}), {args.slots} slots; compiling", file=sys.stderr)
  warm_up(engine, tok, buckets)
  app = build_app(
    engine, tok, args.served_model_name or args.model, drain_seconds=args.drain_seconds
  )
  print(
    f"dspark-jax serve: ready on http://{args.host}:{args.port}/v1", file=sys.stderr, flush=True
  )
  uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
  return 0
