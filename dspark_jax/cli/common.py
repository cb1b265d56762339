"""Pieces several commands share: flags and the checks that run before anything loads."""

from __future__ import annotations


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
