"""`--schedule` for the decoding commands, and `dspark-jax profile`, which measures the costs a
schedule plans with (`decoding.profile`)."""

from __future__ import annotations

import sys

from dspark_jax.cli.common import finite_float

SCHEDULES = ("fixed", "threshold", "alg1", "async")


def add_schedule_flags(
  p, default_help="alg1 for drafters with a confidence head, else fixed"
) -> None:
  p.add_argument(
    "--schedule",
    choices=SCHEDULES,
    default=None,
    help="how many drafted slots each round verifies: fixed (all, or --verify-slots), "
    "threshold (leading slots with confidence >= --threshold), alg1 (the paper's Algorithm 1 "
    "on a measured cost profile; it may skip drafting when drafting does not pay) or async "
    f"(its production variant); default {default_help}",
  )
  p.add_argument(
    "--threshold", type=finite_float, default=None, help="confidence cut of --schedule threshold"
  )
  p.add_argument(
    "--cumulative",
    action="store_true",
    help="--schedule threshold tests the cumulative survival a_k instead of c_k",
  )
  p.add_argument(
    "--profile",
    default=None,
    help="cost profile JSON (default: the one `dspark-jax profile` keeps for this model, "
    "drafter and machine; measured at start-up when there is none)",
  )


def check_schedule_flags(args) -> None:
  """Before anything loads."""
  if args.threshold is not None and args.schedule != "threshold":
    raise ValueError("--threshold applies to --schedule threshold only")
  if args.cumulative and args.schedule != "threshold":
    raise ValueError("--cumulative applies to --schedule threshold only")
  if args.schedule == "threshold":
    if args.threshold is None:
      raise ValueError("--schedule threshold needs --threshold X (0 < X <= 1)")
    if not 0.0 < args.threshold <= 1.0:
      raise ValueError(f"--threshold must be in (0, 1], got {args.threshold}")


def has_confidence(drafter) -> bool:
  config = getattr(getattr(drafter, "inner", drafter), "config", None)
  return bool(getattr(config, "confidence_head", False))


def drafter_desc(drafter) -> str:
  inner = getattr(drafter, "inner", drafter)
  kind = getattr(getattr(inner, "config", None), "kind", type(inner).__name__)
  return f"{kind}, {drafter.draft_len} slots"


def resolve_schedule(
  args, model, params, drafter, draft_params, batch: int, *, quiet=False, default="auto"
):
  """(policy or None, a one-line description) for the decoding commands' flags. With no
  --schedule: `default`, where "auto" is alg1 for drafters with a confidence head, else fixed."""
  from dspark_jax.decoding import scheduler

  name = args.schedule or default
  if name == "auto":
    name = "alg1" if has_confidence(drafter) else "fixed"
  if name == "fixed":
    return None, "fixed"
  if not has_confidence(drafter):
    raise ValueError(f"--schedule {name} needs a drafter with a confidence head")
  if name == "threshold":
    policy = scheduler.Threshold(args.threshold, cumulative=args.cumulative)
    return policy, f"threshold {'a_k' if args.cumulative else 'c_k'} >= {args.threshold}"
  from tqdm import tqdm

  from dspark_jax.decoding import profile

  folder = getattr(args, "drafter_path", None) or getattr(args, "drafter", None)
  key = profile.profile_key(model.source, folder, drafter_desc(drafter))
  bar = tqdm(
    total=profile.num_measurements(drafter, [batch]),
    desc="profiling verification costs",
    disable=quiet,
    file=sys.stderr,
    leave=False,
  )
  with bar:
    table, path, measured = profile.load_or_measure(
      params, model.config, drafter, draft_params, batch, key, path=args.profile, progress=bar
    )
  policy = scheduler.Algorithm1(table) if name == "alg1" else scheduler.Async(table)
  how = "measured now, saved to" if measured else "from"
  return policy, f"{name} (costs {how} {path})"


def add_parser(sub) -> None:
  p = sub.add_parser(
    "profile", help="measure the verification and proposal costs a schedule plans with"
  )
  p.add_argument("--model", default="smollm2-135m")
  p.add_argument("--drafter-path", required=True, help="a drafter folder in DeepSpec format")
  p.add_argument("--batch", type=int, nargs="+", default=[1], help="batch sizes to profile")
  p.add_argument("--repeats", type=int, default=5, help="timed calls per shape (the median)")
  p.add_argument("--verify-slots", type=int, default=None, metavar="G")
  p.add_argument("--out", default=None, help="profile JSON (default: the shared profile place)")


def run_profile(args) -> int:
  if min(args.batch) < 1 or args.repeats < 1:
    raise ValueError("--batch and --repeats must be >= 1")
  from dspark_jax.io.deepspec import check_drafter_folder

  check_drafter_folder(args.drafter_path)
  import jax
  from tqdm import tqdm

  from dspark_jax.decoding import profile
  from dspark_jax.io.deepspec import load_drafter
  from dspark_jax.io.load import load_model

  model = load_model(args.model)
  params = jax.device_put(model.params)
  drafter, draft_params = load_drafter(args.drafter_path, model.config, params)
  if args.verify_slots is not None:
    from dspark_jax.drafters.prefix import PrefixDrafter

    drafter = PrefixDrafter(drafter, args.verify_slots)
  key = profile.profile_key(model.source, args.drafter_path, drafter_desc(drafter))
  with tqdm(
    total=profile.num_measurements(drafter, args.batch), desc="profiling", file=sys.stderr
  ) as bar:
    tables = profile.measure(
      params, model.config, drafter, draft_params, args.batch, repeats=args.repeats, progress=bar
    )
  path = profile.save_profile(args.out or profile.default_path(key), key, tables)
  for b, t in tables.items():
    cells = ", ".join(
      f"{w}: {s * 1e3:.1f}" for w, s in zip(t["widths"], t["verify_seconds"], strict=True)
    )
    print(f"batch {b}: verify ms by width {{{cells}}}; propose {t['propose_seconds'] * 1e3:.1f} ms")
  print(f"wrote {path}")
  return 0
