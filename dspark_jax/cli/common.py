"""Pieces several commands share: flags and the checks that run before anything loads."""

from __future__ import annotations

import argparse
import math


def add_verify_slots(p) -> None:
  p.add_argument(
    "--verify-slots",
    type=int,
    default=None,
    metavar="G",
    help="verify only the first G slots of every proposal (a shorter, cheaper target forward; "
    "still lossless); default: all",
  )


def check_verify_slots(verify_slots) -> None:
  """The lower bound, before anything loads; the drafter's G bounds it from above later."""
  if verify_slots is not None and verify_slots < 1:
    raise ValueError(f"--verify-slots must be >= 1, got {verify_slots}")


def finite_float(text: str) -> float:
  """argparse type: a float that is neither inf nor NaN (both parse as floats)."""
  try:
    value = float(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
  if not math.isfinite(value):
    raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
  return value


def check_ngram_flags(args, ngram_name: str) -> None:
  """--draft-len (and --ngram, where the command has it) set the n-gram drafter's G and n: given
  with any other drafter they would be ignored silently, so they are refused."""
  uses_ngram = args.drafter == ngram_name
  for flag in ("draft_len", "ngram"):
    value = getattr(args, flag, None)
    if value is None:
      continue
    name = "--" + flag.replace("_", "-")
    if not uses_ngram:
      raise ValueError(
        f"{name} applies to the n-gram drafter only (--drafter {ngram_name}); a trained drafter "
        "proposes its own block size (config.json block_size): use --verify-slots G to verify "
        "fewer slots"
      )
    if value < 1:
      raise ValueError(f"{name} must be >= 1, got {value}")


def load_drafter_from_flags(args, model, params, ngram_draft_len: int, ngram_max: int):
  """(drafter, draft params, name) for --drafter none|ngram|checkpoint and --verify-slots.

  `none` is the n-gram drafter never verified (plain decoding needs a drafter object only in
  the engine, which runs every schedule through one loop)."""
  from dspark_jax.drafters.ngram import NgramDrafter

  if args.drafter == "checkpoint":
    from dspark_jax.io.deepspec import load_drafter

    drafter, draft_params = load_drafter(args.drafter_path, model.config, params)
    name = drafter.config.kind
  else:
    drafter = NgramDrafter(ngram_draft_len, model.config.vocab_size, max_ngram=ngram_max)
    draft_params, name = None, "ngram"
  if getattr(args, "verify_slots", None) is not None:
    from dspark_jax.drafters.prefix import PrefixDrafter

    drafter = PrefixDrafter(drafter, args.verify_slots)
  return drafter, draft_params, name
